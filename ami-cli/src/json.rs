//! A minimal writer for the flat JSON objects `--json` prints.

use std::fmt::Write as _;

/// Builds one JSON object, field by field, in insertion order.
pub struct JsonObject {
    out: String,
}

impl JsonObject {
    /// An empty object.
    pub fn new() -> Self {
        JsonObject {
            out: String::from("{"),
        }
    }

    fn key(&mut self, key: &str) {
        if self.out.len() > 1 {
            self.out.push(',');
        }
        push_string(&mut self.out, key);
        self.out.push(':');
    }

    /// Adds a string field.
    pub fn string(&mut self, key: &str, value: &str) {
        self.key(key);
        push_string(&mut self.out, value);
    }

    /// Adds an integer field.
    pub fn number(&mut self, key: &str, value: impl Into<i128>) {
        self.key(key);
        let _ = write!(self.out, "{}", value.into());
    }

    /// Adds a floating-point field (written with three decimals; a value
    /// that is not finite becomes `null`).
    pub fn float(&mut self, key: &str, value: f64) {
        self.key(key);
        if value.is_finite() {
            let _ = write!(self.out, "{value:.3}");
        } else {
            self.out.push_str("null");
        }
    }

    /// Adds a boolean field.
    pub fn bool(&mut self, key: &str, value: bool) {
        self.key(key);
        self.out.push_str(if value { "true" } else { "false" });
    }

    /// Adds a string field, or `null` for `None`.
    pub fn opt_string(&mut self, key: &str, value: Option<&str>) {
        match value {
            Some(v) => self.string(key, v),
            None => {
                self.key(key);
                self.out.push_str("null");
            }
        }
    }

    /// Adds an array of strings.
    pub fn strings<S: AsRef<str>>(&mut self, key: &str, values: &[S]) {
        self.key(key);
        self.out.push('[');
        for (i, v) in values.iter().enumerate() {
            if i > 0 {
                self.out.push(',');
            }
            push_string(&mut self.out, v.as_ref());
        }
        self.out.push(']');
    }

    /// Adds an array of half-open ranges as `[[start,end],...]`.
    pub fn ranges(&mut self, key: &str, ranges: &[std::ops::Range<u64>]) {
        self.key(key);
        self.out.push('[');
        for (i, r) in ranges.iter().enumerate() {
            if i > 0 {
                self.out.push(',');
            }
            let _ = write!(self.out, "[{},{}]", r.start, r.end);
        }
        self.out.push(']');
    }

    /// The finished object.
    pub fn finish(mut self) -> String {
        self.out.push('}');
        self.out
    }
}

/// Appends `s` as a JSON string literal.
fn push_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 || c == '\u{7f}' => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::JsonObject;

    #[test]
    fn writes_valid_json() {
        let mut o = JsonObject::new();
        o.string("label", "a\"b\\c\nd\u{1}é");
        o.number("blocks", 42);
        o.float("seconds", 1.5);
        o.float("bad", f64::NAN);
        o.bool("ok", true);
        o.opt_string("none", None);
        o.strings("list", &["x", "y\""]);
        o.ranges("r", &[0..4096, 8192..12288]);
        let text = o.finish();
        assert_eq!(
            text,
            r#"{"label":"a\"b\\c\nd\u0001é","blocks":42,"seconds":1.500,"bad":null,"ok":true,"none":null,"list":["x","y\""],"r":[[0,4096],[8192,12288]]}"#
        );
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(value["label"], "a\"b\\c\nd\u{1}é");
        assert_eq!(value["blocks"], 42);
    }

    #[test]
    fn empty_object() {
        assert_eq!(JsonObject::new().finish(), "{}");
    }
}
