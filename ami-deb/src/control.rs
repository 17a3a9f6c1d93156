//! deb822 control data: the paragraphs of `Packages`, `Release`, dpkg's
//! `status` and `debian/control` files.
//!
//! [`Paragraphs`] splits a text into [`Paragraph`]s without copying: field
//! names and values borrow from the input. Field names compare
//! case-insensitively. A value is its first line with surrounding
//! whitespace removed, followed by its continuation lines verbatim
//! (including their leading space or tab), joined with `\n`; trailing
//! whitespace at the end of the value is removed. A field with an empty
//! first line (`Conffiles:`) therefore has a value starting with `\n`.
//!
//! Paragraphs are separated by one or more lines that are empty or contain
//! only spaces and tabs; the last paragraph needs no trailing newline.
//! `#` comment lines are only recognised when asked for
//! ([`Paragraphs::with_comments`]): deb822 allows them in source control
//! files, not in `Packages` or `status`. A comment line may sit between
//! continuation lines and does not end a paragraph. Field names may appear
//! only once per paragraph.
//!
//! [`ParagraphBuf`] is an owned, editable paragraph that writes itself back
//! in the same syntax (`Name: value`), preserving multi-line values; that is
//! what the dpkg `status` writer needs.
//!
//! ```
//! use ami_deb::control::{Paragraphs, ParagraphBuf};
//!
//! let text = "Package: hello\nVersion: 2.10-3\nDescription: example\n Longer text.\n .\n More.\n\nPackage: second\n";
//! let paragraphs: Vec<_> = Paragraphs::new(text).collect::<Result<_, _>>()?;
//! assert_eq!(paragraphs.len(), 2);
//! assert_eq!(paragraphs[0].get("version"), Some("2.10-3"));
//! assert_eq!(paragraphs[0].get("Description"), Some("example\n Longer text.\n .\n More."));
//!
//! let mut status = ParagraphBuf::from(&paragraphs[0]);
//! status.insert(1, "Status", "install ok installed")?;
//! assert_eq!(
//!     status.to_string(),
//!     "Package: hello\nStatus: install ok installed\nVersion: 2.10-3\nDescription: example\n Longer text.\n .\n More.\n"
//! );
//! # Ok::<(), ami_deb::Error>(())
//! ```

use std::borrow::Cow;
use std::fmt;

use crate::error::{Error, Result};

/// One `Name: value` field of a [`Paragraph`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field<'a> {
    name: &'a str,
    value: Cow<'a, str>,
    line: usize,
}

impl<'a> Field<'a> {
    /// The field name as written.
    pub fn name(&self) -> &'a str {
        self.name
    }

    /// The value (see the [module documentation](self) for its form).
    pub fn value(&self) -> &str {
        &self.value
    }

    /// The 1-based line number of the field's first line in the input.
    pub fn line(&self) -> usize {
        self.line
    }
}

/// One paragraph (stanza) of a deb822 text, borrowing from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paragraph<'a> {
    text: &'a str,
    offset: usize,
    line: usize,
    fields: Vec<Field<'a>>,
}

impl<'a> Paragraph<'a> {
    /// Parses a text that must contain exactly one paragraph (blank lines
    /// around it are allowed); no comment lines.
    pub fn parse(text: &'a str) -> Result<Paragraph<'a>> {
        let mut it = Paragraphs::new(text);
        let first = it.next().transpose()?.ok_or_else(|| Error::Syntax {
            line: 1,
            reason: "no paragraph found".into(),
        })?;
        if let Some(second) = it.next().transpose()? {
            return Err(Error::Syntax {
                line: second.line,
                reason: "more than one paragraph".into(),
            });
        }
        Ok(first)
    }

    /// The value of the field `name` (compared case-insensitively).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.field(name).map(Field::value)
    }

    /// The field `name` (compared case-insensitively).
    pub fn field(&self, name: &str) -> Option<&Field<'a>> {
        self.fields
            .iter()
            .find(|f| f.name.len() == name.len() && f.name.eq_ignore_ascii_case(name))
    }

    /// Whether the paragraph has the field `name`.
    pub fn contains(&self, name: &str) -> bool {
        self.field(name).is_some()
    }

    /// All fields, in input order.
    pub fn fields(&self) -> &[Field<'a>] {
        &self.fields
    }

    /// The paragraph's raw text: from its first line to the end of its last
    /// line, including that line's newline when there is one.
    pub fn as_str(&self) -> &'a str {
        self.text
    }

    /// Byte offset of [`Paragraph::as_str`] in the parsed input.
    pub fn offset(&self) -> usize {
        self.offset
    }

    /// 1-based line number of the paragraph's first line in the input.
    pub fn line(&self) -> usize {
        self.line
    }
}

impl fmt::Display for Paragraph<'_> {
    /// Writes the fields as `Name: value` lines (no blank line after).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for field in &self.fields {
            write_field(f, field.name, &field.value)?;
        }
        Ok(())
    }
}

fn write_field(f: &mut impl fmt::Write, name: &str, value: &str) -> fmt::Result {
    if value.starts_with('\n') || value.is_empty() {
        writeln!(f, "{name}:{value}")
    } else {
        writeln!(f, "{name}: {value}")
    }
}

/// An iterator over the paragraphs of a deb822 text.
///
/// Yields `Err` for a syntax error and then stops.
#[derive(Debug, Clone)]
pub struct Paragraphs<'a> {
    text: &'a str,
    pos: usize,
    line: usize,
    comments: bool,
    failed: bool,
}

/// Whether a line separates paragraphs: empty or only spaces and tabs.
fn is_blank(line: &str) -> bool {
    line.bytes().all(|b| b == b' ' || b == b'\t')
}

/// Why `name` cannot be a deb822 field name, if it cannot.
fn field_name_problem(name: &str) -> Option<&'static str> {
    match name.as_bytes().first() {
        None => Some("empty field name"),
        Some(b'#') => Some("field name starts with '#'"),
        Some(b'-') => Some("field name starts with '-'"),
        Some(_)
            if !name
                .bytes()
                .all(|b| (0x21..=0x7E).contains(&b) && b != b':') =>
        {
            Some("field name contains a space, colon or non-ASCII character")
        }
        Some(_) => None,
    }
}

impl<'a> Paragraphs<'a> {
    /// Paragraphs of `text`, without comment lines (`Packages`, `Release`,
    /// dpkg `status`).
    pub fn new(text: &'a str) -> Self {
        Paragraphs {
            text,
            pos: 0,
            line: 0,
            comments: false,
            failed: false,
        }
    }

    /// Paragraphs of `text` where lines starting with `#` are comments
    /// (`debian/control`, `deb-origin`).
    pub fn with_comments(text: &'a str) -> Self {
        Paragraphs {
            comments: true,
            ..Self::new(text)
        }
    }

    /// The next line: (start offset, line without its newline, offset after
    /// the newline). Advances the position and line counter.
    fn next_line(&mut self) -> Option<(usize, &'a str, usize)> {
        if self.pos >= self.text.len() {
            return None;
        }
        let start = self.pos;
        let rest = &self.text[start..];
        let (line, next) = match rest.find('\n') {
            Some(n) => (&rest[..n], start + n + 1),
            None => (rest, self.text.len()),
        };
        self.pos = next;
        self.line += 1;
        Some((start, line, next))
    }

    fn error(&mut self, line: usize, reason: &str) -> Option<Result<Paragraph<'a>>> {
        self.failed = true;
        Some(Err(Error::Syntax {
            line,
            reason: reason.to_owned(),
        }))
    }

    fn parse_next(&mut self) -> Option<Result<Paragraph<'a>>> {
        // Skip separators (and comments) before the paragraph.
        let (start, first_line) = loop {
            let saved = (self.pos, self.line);
            let (start, line, _) = self.next_line()?;
            if is_blank(line) || (self.comments && line.starts_with('#')) {
                continue;
            }
            (self.pos, self.line) = saved;
            break (start, saved.1 + 1);
        };
        let mut fields: Vec<Field<'a>> = Vec::with_capacity(24);
        // The field being read: index of its value start, end of its last
        // line, whether a comment sat inside it.
        let mut current: Option<(usize, usize, bool)> = None;
        let mut end = start;
        loop {
            let saved = (self.pos, self.line);
            let Some((line_start, line, next)) = self.next_line() else {
                break;
            };
            if is_blank(line) {
                (self.pos, self.line) = saved;
                break;
            }
            if self.comments && line.starts_with('#') {
                if let Some(cur) = current.as_mut() {
                    cur.2 = true;
                }
                continue;
            }
            end = next;
            let first = line.as_bytes()[0];
            if first == b' ' || first == b'\t' {
                match current.as_mut() {
                    Some(cur) => cur.1 = line_start + line.len(),
                    None => {
                        return self.error(self.line, "continuation line before the first field")
                    }
                }
                continue;
            }
            if let Some(cur) = current.take() {
                self.finish_field(fields.last_mut().expect("current field"), cur);
            }
            let Some(colon) = line.bytes().position(|b| b == b':') else {
                let reason = if first == b'#' {
                    "comment lines ('#') are not allowed in this kind of file"
                } else {
                    "line is not a field, a continuation or a blank"
                };
                return self.error(self.line, reason);
            };
            let name = &line[..colon];
            if let Some(problem) = field_name_problem(name) {
                return self.error(self.line, problem);
            }
            if fields
                .iter()
                .any(|f| f.name.len() == name.len() && f.name.eq_ignore_ascii_case(name))
            {
                let reason = format!("duplicate field {name}");
                return self.error(self.line, &reason);
            }
            let after = &line[colon + 1..];
            let skipped = after.len() - after.trim_start_matches([' ', '\t']).len();
            let value_start = line_start + colon + 1 + skipped;
            current = Some((value_start, line_start + line.len(), false));
            fields.push(Field {
                name,
                value: Cow::Borrowed(""),
                line: self.line,
            });
        }
        if let Some(cur) = current.take() {
            self.finish_field(fields.last_mut().expect("current field"), cur);
        }
        Some(Ok(Paragraph {
            text: &self.text[start..end],
            offset: start,
            line: first_line,
            fields,
        }))
    }

    /// Sets the value of `field` from its span.
    fn finish_field(
        &self,
        field: &mut Field<'a>,
        (value_start, value_end, comment): (usize, usize, bool),
    ) {
        let raw = &self.text[value_start..value_end.max(value_start)];
        field.value = if comment {
            // Comment lines start in column 0; the first segment is the
            // value's first line, which may start with '#'.
            let kept: Vec<&str> = raw
                .split('\n')
                .enumerate()
                .filter(|(i, l)| *i == 0 || !l.starts_with('#'))
                .map(|(_, l)| l)
                .collect();
            let joined = kept.join("\n");
            Cow::Owned(joined.trim_end_matches([' ', '\t']).to_owned())
        } else {
            Cow::Borrowed(raw.trim_end_matches([' ', '\t']))
        };
    }
}

impl<'a> Iterator for Paragraphs<'a> {
    type Item = Result<Paragraph<'a>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        self.parse_next()
    }
}

/// An owned, editable paragraph that keeps its field order.
///
/// Values use the form described in the [module documentation](self); the
/// setters check that the result can be written back and parsed again to
/// the same fields.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ParagraphBuf {
    fields: Vec<(String, String)>,
}

/// Checks that `name: value` can be written and read back unchanged.
fn check_field(name: &str, value: &str) -> Result<()> {
    let invalid = |reason: &str| Error::InvalidField {
        name: name.to_owned(),
        reason: reason.to_owned(),
    };
    if let Some(problem) = field_name_problem(name) {
        return Err(invalid(problem));
    }
    let mut lines = value.split('\n');
    let first = lines.next().unwrap_or_default();
    if first != first.trim_matches([' ', '\t']) {
        return Err(invalid("value has whitespace around its first line"));
    }
    if value.ends_with([' ', '\t', '\n']) {
        return Err(invalid("value ends with whitespace"));
    }
    for line in lines {
        if !line.starts_with([' ', '\t']) {
            return Err(invalid(
                "continuation line does not start with a space or tab",
            ));
        }
        if is_blank(line) {
            return Err(invalid("continuation line is blank (write \" .\" instead)"));
        }
    }
    Ok(())
}

impl ParagraphBuf {
    /// An empty paragraph.
    pub fn new() -> Self {
        Self::default()
    }

    /// The value of the field `name` (compared case-insensitively).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.position(name).map(|i| self.fields[i].1.as_str())
    }

    fn position(&self, name: &str) -> Option<usize> {
        self.fields
            .iter()
            .position(|(n, _)| n.eq_ignore_ascii_case(name))
    }

    /// Sets a field: replaces the value in place if the field exists
    /// (keeping its position and the name's spelling), appends it otherwise.
    pub fn set(&mut self, name: &str, value: &str) -> Result<()> {
        check_field(name, value)?;
        match self.position(name) {
            Some(i) => self.fields[i].1 = value.to_owned(),
            None => self.fields.push((name.to_owned(), value.to_owned())),
        }
        Ok(())
    }

    /// Inserts a field at position `index` (clamped to the end); an
    /// existing field of that name is removed first.
    pub fn insert(&mut self, index: usize, name: &str, value: &str) -> Result<()> {
        check_field(name, value)?;
        if let Some(i) = self.position(name) {
            self.fields.remove(i);
        }
        let index = index.min(self.fields.len());
        self.fields
            .insert(index, (name.to_owned(), value.to_owned()));
        Ok(())
    }

    /// Removes the field `name`, returning its value.
    pub fn remove(&mut self, name: &str) -> Option<String> {
        self.position(name).map(|i| self.fields.remove(i).1)
    }

    /// The fields as `(name, value)` pairs, in order.
    pub fn fields(&self) -> impl ExactSizeIterator<Item = (&str, &str)> + '_ {
        self.fields.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }

    /// Number of fields.
    pub fn len(&self) -> usize {
        self.fields.len()
    }

    /// Whether there are no fields.
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }
}

impl From<&Paragraph<'_>> for ParagraphBuf {
    fn from(p: &Paragraph<'_>) -> Self {
        ParagraphBuf {
            fields: p
                .fields
                .iter()
                .map(|f| (f.name.to_owned(), f.value.clone().into_owned()))
                .collect(),
        }
    }
}

impl fmt::Display for ParagraphBuf {
    /// Writes the fields as `Name: value` lines (no blank line after).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (name, value) in &self.fields {
            write_field(f, name, value)?;
        }
        Ok(())
    }
}
