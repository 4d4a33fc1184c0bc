//! Counts the rows of one table's COPY text data: one row per line (COPY
//! text escapes newlines inside values), up to an end-of-data line `\.`.
//! Fed in pieces split anywhere; holds three bits of state, never a line.

/// Where the counter is within the current line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum At {
    /// At the start of a line.
    Start,
    /// The line so far is `\`.
    Backslash,
    /// The line so far is `\.`.
    BackslashDot,
    /// Anywhere else in a line.
    Middle,
    /// Past the `\.` line: the rest of the data is not rows.
    Ended,
}

/// Rows of one COPY text stream.
#[derive(Debug)]
pub struct CopyRows {
    rows: u64,
    at: At,
}

impl Default for CopyRows {
    fn default() -> Self {
        Self::new()
    }
}

impl CopyRows {
    pub fn new() -> Self {
        CopyRows {
            rows: 0,
            at: At::Start,
        }
    }

    /// Counts the lines of `data`, which continues what was fed before.
    /// Returns how many bytes were COPY data: all of them, or those up to
    /// and including the `\.` line.
    pub fn feed(&mut self, input: &[u8]) -> usize {
        let mut data = input;
        while !data.is_empty() {
            match self.at {
                At::Ended => break,
                At::Middle => match memchr::memchr(b'\n', data) {
                    None => return input.len(),
                    Some(i) => {
                        // The next line may be `\.`: look at its start.
                        let rest = &data[i + 1..];
                        self.rows += 1;
                        self.at = At::Start;
                        data = rest;
                    }
                },
                At::Start | At::Backslash | At::BackslashDot => {
                    let b = data[0];
                    data = &data[1..];
                    self.at = match (self.at, b) {
                        (At::BackslashDot, b'\n') => At::Ended,
                        (_, b'\n') => {
                            self.rows += 1;
                            At::Start
                        }
                        (At::Start, b'\\') => At::Backslash,
                        (At::Backslash, b'.') => At::BackslashDot,
                        _ => At::Middle,
                    };
                }
            }
        }
        input.len() - data.len()
    }

    /// The rows counted. A last line without a newline counts as a row
    /// (COPY accepts it), a lone `\.` without one does not.
    pub fn rows(&self) -> u64 {
        match self.at {
            At::Backslash | At::Middle => self.rows + 1,
            At::Start | At::BackslashDot | At::Ended => self.rows,
        }
    }

    /// True once the `\.` line was seen.
    pub fn ended(&self) -> bool {
        self.at == At::Ended
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(pieces: &[&[u8]]) -> u64 {
        let mut c = CopyRows::new();
        for p in pieces {
            c.feed(p);
        }
        c.rows()
    }

    #[test]
    fn rows_are_lines_up_to_the_terminator() {
        assert_eq!(count(&[b""]), 0);
        assert_eq!(count(&[b"\\.\n\n\n"]), 0);
        assert_eq!(count(&[b"1\ta\n2\tb\n\\.\n\n\n"]), 2);
        // Without a terminator (archives of later pg_dump versions).
        assert_eq!(count(&[b"1\ta\n2\tb\n"]), 2);
        // Empty lines are rows: a zero-column table, or one empty text value.
        assert_eq!(count(&[b"\n\n\n\\.\n"]), 3);
        // `\\.` is a value (an escaped backslash and a dot), not the end.
        assert_eq!(count(&[b"\\\\.\n\\.x\n\\\n\\.\n"]), 3);
        // Escaped newlines and tabs stay on one line.
        assert_eq!(count(&[b"x\\ny\\tz\t\\\\n\n\\.\n"]), 1);
        // A last line without its newline.
        assert_eq!(count(&[b"1\n2"]), 2);
    }

    /// Every split of the input into two and three pieces counts the same.
    #[test]
    fn split_anywhere() {
        let data: &[u8] = b"1\tx\\ny\n\n\\\\.\n\\\n2\t\\.\n3\n\\.\n\n\nnot a row\n";
        let whole = count(&[data]);
        assert_eq!(whole, 6);
        for i in 0..=data.len() {
            assert_eq!(count(&[&data[..i], &data[i..]]), whole, "split at {i}");
            for j in i..=data.len() {
                assert_eq!(
                    count(&[&data[..i], &data[i..j], &data[j..]]),
                    whole,
                    "split at {i}, {j}"
                );
            }
        }
        // What follows the terminator is not COPY data.
        let mut c = CopyRows::new();
        assert_eq!(c.feed(b"1\n\\.\nSELECT 1;\n"), 5);
        assert!(c.ended());
        // One byte at a time.
        let bytes: Vec<&[u8]> = data.chunks(1).collect();
        assert_eq!(count(&bytes), whole);
    }
}
