//! Just enough of SQL's lexical structure to follow a pg_dump script as a
//! byte stream: where string literals, quoted identifiers, dollar-quoted
//! bodies and comments begin and end, and so where statements end. Also a
//! tokenizer for one complete single-line statement, which the filter's
//! rules match. Works on bytes (a dump in any server encoding) and on input
//! split anywhere.

/// Where the scanner is.
#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    Normal,
    /// `-` seen: a second `-` starts a line comment.
    Dash,
    /// `/` seen: `*` starts a block comment.
    Slash,
    LineComment,
    /// Inside `/* … */` (they nest); `prev` is the last byte seen.
    Block {
        depth: u32,
        prev: u8,
    },
    /// Inside `'…'`; `backslash`: an `E'…'` string; `quote`: a `'` was just
    /// seen (end, or the first half of `''`); `escaped`: the byte after a
    /// backslash.
    Quote {
        backslash: bool,
        quote: bool,
        escaped: bool,
    },
    /// Inside `"…"`; `quote` as above for `""`.
    Ident {
        quote: bool,
    },
    /// `$` seen where a dollar quote may start: collecting its tag.
    Tag(Vec<u8>),
    /// Inside `$tag$ … $tag$`: `close` is `$tag$`, `matched` how much of it
    /// was just seen.
    Dollar {
        close: Vec<u8>,
        matched: usize,
    },
}

/// Characters that continue an identifier (bytes ≥ 0x80 included, as
/// Postgres does).
fn ident_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b >= 0x80
}

/// Follows SQL text byte by byte.
#[derive(Debug, Clone)]
pub struct Lexer {
    state: State,
    /// The current statement has started (something other than blanks and
    /// comments since the last `;`).
    in_statement: bool,
    /// The last two bytes seen in `Normal`, for `E'` and dollar quotes.
    prev: u8,
    prev2: u8,
}

impl Default for Lexer {
    fn default() -> Self {
        Self {
            state: State::Normal,
            in_statement: false,
            prev: b' ',
            prev2: b' ',
        }
    }
}

impl Lexer {
    /// True between statements: not inside a literal, identifier, comment
    /// or a started statement.
    pub fn at_statement_start(&self) -> bool {
        matches!(self.state, State::Normal | State::LineComment) && !self.in_statement
    }

    pub fn scan(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.byte(b);
        }
    }

    fn byte(&mut self, b: u8) {
        match &mut self.state {
            State::Normal => self.normal(b),
            State::Dash => {
                if b == b'-' {
                    self.state = State::LineComment;
                } else {
                    self.state = State::Normal;
                    self.in_statement = true;
                    self.normal(b);
                }
            }
            State::Slash => {
                if b == b'*' {
                    self.state = State::Block {
                        depth: 1,
                        prev: b' ',
                    };
                } else {
                    self.state = State::Normal;
                    self.in_statement = true;
                    self.normal(b);
                }
            }
            State::LineComment => {
                if b == b'\n' {
                    self.state = State::Normal;
                }
            }
            State::Block { depth, prev } => {
                if *prev == b'*' && b == b'/' {
                    *depth -= 1;
                    *prev = b' ';
                    if *depth == 0 {
                        self.state = State::Normal;
                    }
                } else if *prev == b'/' && b == b'*' {
                    *depth += 1;
                    *prev = b' ';
                } else {
                    *prev = b;
                }
            }
            State::Quote {
                backslash,
                quote,
                escaped,
            } => {
                if *escaped {
                    *escaped = false;
                } else if *quote {
                    if b == b'\'' {
                        *quote = false;
                    } else {
                        self.state = State::Normal;
                        self.normal(b);
                    }
                } else if b == b'\'' {
                    *quote = true;
                } else if *backslash && b == b'\\' {
                    *escaped = true;
                }
            }
            State::Ident { quote } => {
                if *quote {
                    if b == b'"' {
                        *quote = false;
                    } else {
                        self.state = State::Normal;
                        self.normal(b);
                    }
                } else if b == b'"' {
                    *quote = true;
                }
            }
            State::Tag(tag) => {
                let ok = if tag.is_empty() {
                    b.is_ascii_alphabetic() || b == b'_' || b >= 0x80
                } else {
                    b.is_ascii_alphanumeric() || b == b'_' || b >= 0x80
                };
                if b == b'$' {
                    let mut close = Vec::with_capacity(tag.len() + 2);
                    close.push(b'$');
                    close.extend_from_slice(tag);
                    close.push(b'$');
                    self.state = State::Dollar { close, matched: 0 };
                } else if ok {
                    tag.push(b);
                } else {
                    // `$1`, `a$b`: not a dollar quote.
                    self.state = State::Normal;
                    self.prev2 = b'$';
                    self.prev = b'$';
                    self.normal(b);
                }
            }
            State::Dollar { close, matched } => {
                if b == close[*matched] {
                    *matched += 1;
                    if *matched == close.len() {
                        self.state = State::Normal;
                        self.prev = b'$';
                        self.prev2 = b'$';
                    }
                } else {
                    *matched = usize::from(b == b'$');
                }
            }
        }
    }

    fn normal(&mut self, b: u8) {
        match b {
            b'-' => self.state = State::Dash,
            b'/' => self.state = State::Slash,
            b'\'' => {
                let backslash = matches!(self.prev, b'E' | b'e') && !ident_byte(self.prev2);
                self.in_statement = true;
                self.state = State::Quote {
                    backslash,
                    quote: false,
                    escaped: false,
                };
            }
            b'"' => {
                self.in_statement = true;
                self.state = State::Ident { quote: false };
            }
            b'$' if !ident_byte(self.prev) => {
                self.in_statement = true;
                self.state = State::Tag(Vec::new());
            }
            b';' => self.in_statement = false,
            b' ' | b'\t' | b'\n' | b'\r' | b'\x0c' => {}
            _ => self.in_statement = true,
        }
        self.prev2 = self.prev;
        self.prev = b;
    }
}

/// One token of a single-line statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Token {
    /// A keyword or bare identifier, as written.
    Word(String),
    /// A `"quoted"` identifier, unquoted.
    Quoted(String),
    /// A string literal or dollar-quoted text, as written.
    Literal(String),
    Punct(u8),
}

impl Token {
    /// True for the keyword `kw` (any case).
    pub fn is(&self, kw: &str) -> bool {
        matches!(self, Token::Word(w) if w.eq_ignore_ascii_case(kw))
    }

    /// The name an identifier token stands for: bare words as Postgres
    /// folds them (ASCII lower case), quoted ones as written.
    pub fn name(&self) -> Option<String> {
        match self {
            Token::Word(w) => Some(w.to_ascii_lowercase()),
            Token::Quoted(q) => Some(q.clone()),
            _ => None,
        }
    }
}

/// The tokens of `line` if it is exactly one complete statement ending in
/// `;` (comments dropped); `None` otherwise.
pub fn statement_tokens(line: &[u8]) -> Option<Vec<Token>> {
    let text = std::str::from_utf8(line).ok()?;
    let bytes = text.as_bytes();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b' ' | b'\t' | b'\r' | b'\n' => i += 1,
            b'-' if bytes.get(i + 1) == Some(&b'-') => {
                i = bytes[i..]
                    .iter()
                    .position(|&c| c == b'\n')
                    .map_or(bytes.len(), |n| i + n + 1);
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => i = block_comment_end(bytes, i)?,
            b'"' => {
                let mut name = String::new();
                let mut j = i + 1;
                loop {
                    let c = *bytes.get(j)?;
                    if c == b'"' {
                        if bytes.get(j + 1) == Some(&b'"') {
                            name.push('"');
                            j += 2;
                            continue;
                        }
                        break;
                    }
                    let ch = text[j..].chars().next()?;
                    name.push(ch);
                    j += ch.len_utf8();
                }
                tokens.push(Token::Quoted(name));
                i = j + 1;
            }
            b'\'' => {
                let backslash = matches!(tokens.last(), Some(Token::Word(w)) if w.eq_ignore_ascii_case("e"))
                    && i > 0
                    && matches!(bytes[i - 1], b'E' | b'e');
                if backslash {
                    tokens.pop();
                }
                let start = if backslash { i - 1 } else { i };
                let mut j = i + 1;
                loop {
                    let c = *bytes.get(j)?;
                    if backslash && c == b'\\' {
                        j += 2;
                        continue;
                    }
                    if c == b'\'' {
                        if bytes.get(j + 1) == Some(&b'\'') {
                            j += 2;
                            continue;
                        }
                        break;
                    }
                    j += 1;
                }
                tokens.push(Token::Literal(text.get(start..=j)?.to_string()));
                i = j + 1;
            }
            b'$' if i + 1 < bytes.len() && !bytes[i + 1].is_ascii_digit() => {
                let tag_end = i + 1 + bytes[i + 1..].iter().position(|&c| c == b'$')?;
                let tag = &text[i..=tag_end];
                if !tag[1..tag.len() - 1]
                    .bytes()
                    .all(|c| c.is_ascii_alphanumeric() || c == b'_' || c >= 0x80)
                {
                    return None;
                }
                let body_end = tag_end + 1 + text[tag_end + 1..].find(tag)?;
                let end = body_end + tag.len();
                tokens.push(Token::Literal(text[i..end].to_string()));
                i = end;
            }
            _ if ident_byte(b) => {
                let mut j = i;
                while j < bytes.len() && ident_byte(bytes[j]) {
                    j += 1;
                }
                tokens.push(Token::Word(text[i..j].to_string()));
                i = j;
            }
            _ => {
                tokens.push(Token::Punct(b));
                i += 1;
            }
        }
    }
    let semis = tokens.iter().filter(|t| **t == Token::Punct(b';')).count();
    (semis == 1 && tokens.last() == Some(&Token::Punct(b';'))).then_some(tokens)
}

/// The index just past the `/* … */` comment (they nest) that starts at
/// `start`; `None` when it is not closed.
fn block_comment_end(bytes: &[u8], start: usize) -> Option<usize> {
    let mut depth = 0u32;
    let mut i = start;
    while i + 1 < bytes.len() {
        match (bytes[i], bytes[i + 1]) {
            (b'/', b'*') => {
                depth += 1;
                i += 2;
            }
            (b'*', b'/') => {
                depth -= 1;
                i += 2;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => i += 1,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn starts_after(text: &str) -> bool {
        let mut l = Lexer::default();
        l.scan(text.as_bytes());
        l.at_statement_start()
    }

    #[test]
    fn statements_end_only_outside_quotes_and_comments() {
        assert!(starts_after("SELECT 1;\n"));
        assert!(!starts_after("SELECT 'a;\n"));
        assert!(starts_after("SELECT 'a;''b';\n"));
        assert!(!starts_after("SELECT \"x;\n"));
        assert!(starts_after("SELECT \"x;\"\"y\";\n"));
        assert!(starts_after("-- a comment; with 'quote\n"));
        assert!(starts_after("SELECT 1; -- trailing 'quote\n"));
        assert!(!starts_after("SELECT 1 /* ; */\n"));
        assert!(starts_after("SELECT 1 /* /* nested */ ; */;\n"));
        assert!(!starts_after(
            "CREATE FUNCTION f() RETURNS int AS $body$\nSELECT 1;\n"
        ));
        assert!(starts_after(
            "CREATE FUNCTION f() RETURNS int AS $body$\nSELECT '$b$'; $$;\n$body$;\n"
        ));
        assert!(starts_after("SELECT $$a;$$;\n"));
        // $1 is a parameter, a$b an identifier: no dollar quote.
        assert!(starts_after("PREPARE p AS SELECT $1;\n"));
        assert!(starts_after("SELECT a$b$c;\n"));
        // E'' strings know backslash escapes, plain ones do not.
        assert!(starts_after("SELECT E'a\\';';\n"));
        assert!(starts_after("SELECT 'a\\';\n"));
        assert!(!starts_after("SELECT E'a\\';\n"));
        // Not an E string: the E ends an identifier.
        assert!(starts_after("SELECT namE'a\\';\n"));
    }

    #[test]
    fn any_split_of_the_input_gives_the_same_state() {
        let text = "SELECT E'x\\'y', \"a\"\"b\", $t$ ; $ $t$, 'c''d' /* ; /* */ */; -- x\n";
        for cut in 0..text.len() {
            let mut l = Lexer::default();
            l.scan(&text.as_bytes()[..cut]);
            l.scan(&text.as_bytes()[cut..]);
            assert!(l.at_statement_start(), "cut at {cut}");
        }
    }

    #[test]
    fn single_line_statements_are_tokenized() {
        let t = statement_tokens(b"ALTER TABLE public.\"Odd t\" OWNER TO \"r\"\"x\";").unwrap();
        assert!(t[0].is("alter") && t[1].is("TABLE"));
        assert_eq!(t[2], Token::Word("public".into()));
        assert_eq!(t[3], Token::Punct(b'.'));
        assert_eq!(t[4], Token::Quoted("Odd t".into()));
        assert_eq!(t[7].name().as_deref(), Some("r\"x"));
        let t = statement_tokens(b"SET default_tablespace = '';").unwrap();
        assert_eq!(t[3], Token::Literal("''".into()));
        let t = statement_tokens(b"SELECT E'a\\'b', $q$x;y$q$, 'c''d';").unwrap();
        assert_eq!(t[1], Token::Literal("E'a\\'b'".into()));
        assert_eq!(t[3], Token::Literal("$q$x;y$q$".into()));
        assert_eq!(t[5], Token::Literal("'c''d'".into()));
        // Not exactly one complete statement.
        assert!(statement_tokens(b"SELECT 1").is_none());
        assert!(statement_tokens(b"SELECT 1; SELECT 2;").is_none());
        assert!(statement_tokens(b"SELECT 'open;").is_none());
        assert!(statement_tokens(b"SELECT $$open;").is_none());
        assert_eq!(
            statement_tokens(b"GRANT x TO y; -- note").map(|t| t.len()),
            Some(5)
        );
        // Comments are dropped, and what follows them is still read.
        assert!(statement_tokens(b"GRANT x TO y; -- note\nDROP DATABASE d;").is_none());
        assert!(
            statement_tokens(b"GRANT x TO y; /* a /* nested */ one */ DROP DATABASE d;").is_none()
        );
        assert!(statement_tokens(b"GRANT x TO y; /* open").is_none());
        assert_eq!(
            statement_tokens(b"GRANT /* ; */ x -- ;\n TO y;").map(|t| t.len()),
            Some(5)
        );
    }
}
