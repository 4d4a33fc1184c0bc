//! The dashboard's templates (embedded in the binary, HTML auto-escaped by
//! minijinja: every value renders as text) and the formatting of sizes,
//! times and ages shown on its pages.
use bytes::Bytes;
use chrono::{DateTime, Utc};
use http_body_util::Full;
use hyper::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue};
use hyper::{Response, StatusCode};

/// The templates, by file name (`.html`: auto-escaped).
const TEMPLATES: [(&str, &str); 12] = [
    ("base.html", include_str!("../../templates/base.html")),
    ("login.html", include_str!("../../templates/login.html")),
    ("error.html", include_str!("../../templates/error.html")),
    ("fleet.html", include_str!("../../templates/fleet.html")),
    ("jobs.html", include_str!("../../templates/jobs.html")),
    ("catalog.html", include_str!("../../templates/catalog.html")),
    ("dump.html", include_str!("../../templates/dump.html")),
    ("task.html", include_str!("../../templates/task.html")),
    (
        "restores.html",
        include_str!("../../templates/restores.html"),
    ),
    (
        "restore_jobs.html",
        include_str!("../../templates/restore_jobs.html"),
    ),
    (
        "messages.html",
        include_str!("../../templates/messages.html"),
    ),
    (
        "unprotected.html",
        include_str!("../../templates/unprotected.html"),
    ),
];

const STYLESHEET: &str = include_str!("../../templates/style.css");

/// Longest message shown on an error page (characters).
const MAX_MESSAGE_CHARS: usize = 300;

pub fn templates() -> anyhow::Result<minijinja::Environment<'static>> {
    let mut env = minijinja::Environment::new();
    for (name, source) in TEMPLATES {
        env.add_template(name, source)
            .map_err(|e| anyhow::anyhow!("dashboard template {name}: {e:#}"))?;
    }
    Ok(env)
}

pub fn stylesheet() -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from_static(STYLESHEET.as_bytes())));
    *resp.status_mut() = StatusCode::OK;
    let h = resp.headers_mut();
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/css; charset=utf-8"),
    );
    h.insert(CACHE_CONTROL, HeaderValue::from_static("max-age=3600"));
    resp
}

/// `s` cut to [`MAX_MESSAGE_CHARS`] characters with an ellipsis.
pub fn cut(s: &str) -> String {
    match s.char_indices().nth(MAX_MESSAGE_CHARS) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

/// `1.5 GiB`.
pub fn bytes(n: i64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 0 {
        return "?".into();
    }
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// `2026-12-06 20:31:07`.
pub fn time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S").to_string()
}

/// `3h 5m ago` (or `in …` for a time ahead).
pub fn age(t: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let d = now - t;
    let (secs, ahead) = if d.num_seconds() < 0 {
        (-d.num_seconds(), true)
    } else {
        (d.num_seconds(), false)
    };
    let text = if secs < 60 {
        format!("{secs}s")
    } else if secs < 3600 {
        format!("{}m", secs / 60)
    } else if secs < 86_400 {
        format!("{}h {}m", secs / 3600, secs % 3600 / 60)
    } else {
        format!("{}d {}h", secs / 86_400, secs % 86_400 / 3600)
    };
    if ahead {
        format!("in {text}")
    } else {
        format!("{text} ago")
    }
}

/// Stored bytes per logical byte as a percentage (`12.5%`), `-` for none.
pub fn ratio(stored: i64, logical: i64) -> String {
    if logical <= 0 {
        "-".into()
    } else {
        format!("{:.1}%", stored as f64 * 100.0 / logical as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_parse_and_escape() {
        let env = templates().expect("the templates parse");
        let html = env
            .get_template("error.html")
            .and_then(|t| {
                t.render(minijinja::context! {
                    status => 400, message => "<script>alert('x')</script> \"q\" ünï",
                })
            })
            .expect("render");
        assert!(!html.contains("<script>alert"), "{html}");
        assert!(html.contains("&lt;script&gt;"), "{html}");
        assert!(html.contains("ünï"), "{html}");
    }

    #[test]
    fn formats() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(-1), "?");
        assert_eq!(ratio(1, 4), "25.0%");
        assert_eq!(ratio(1, 0), "-");
        let now = Utc::now();
        assert_eq!(age(now - chrono::Duration::seconds(3700), now), "1h 1m ago");
        assert_eq!(age(now + chrono::Duration::seconds(120), now), "in 2m");
        let long = "x".repeat(10_000);
        assert_eq!(cut(&long).chars().count(), MAX_MESSAGE_CHARS + 1);
        assert_eq!(cut("short"), "short");
    }
}
