//! deb822 paragraphs: splitting, field access, errors and writing back.

use ami_deb::control::{Paragraph, ParagraphBuf, Paragraphs};
use ami_deb::Error;

fn parse(text: &str) -> Vec<Paragraph<'_>> {
    Paragraphs::new(text).collect::<Result<_, _>>().unwrap()
}

fn syntax_error(result: Option<Result<Paragraph<'_>, Error>>) -> (usize, String) {
    match result {
        Some(Err(Error::Syntax { line, reason })) => (line, reason),
        other => panic!("expected a syntax error, got {other:?}"),
    }
}

#[test]
fn fields_values_and_case_insensitive_names() {
    let text = "Package: hello\nversion:   2.10-3  \nMulti-Arch: foreign\nDescription: short\n long one\n .\n  indented\n";
    let p = Paragraph::parse(text).unwrap();
    assert_eq!(p.get("Package"), Some("hello"));
    assert_eq!(p.get("PACKAGE"), Some("hello"));
    assert_eq!(p.get("Version"), Some("2.10-3"));
    assert_eq!(p.get("multi-arch"), Some("foreign"));
    assert_eq!(
        p.get("Description"),
        Some("short\n long one\n .\n  indented")
    );
    assert_eq!(p.get("Missing"), None);
    assert!(p.contains("description"));
    let names: Vec<&str> = p.fields().iter().map(|f| f.name()).collect();
    assert_eq!(names, ["Package", "version", "Multi-Arch", "Description"]);
    assert_eq!(p.fields()[3].line(), 4);
}

#[test]
fn empty_first_line_and_empty_values() {
    let text = "Conffiles:\n /etc/a 0123\n /etc/b 4567\nEmpty:\nTabbed:\tvalue\t\n";
    let p = Paragraph::parse(text).unwrap();
    assert_eq!(p.get("Conffiles"), Some("\n /etc/a 0123\n /etc/b 4567"));
    assert_eq!(p.get("Empty"), Some(""));
    assert_eq!(p.get("Tabbed"), Some("value"));
}

#[test]
fn separators_blank_lines_and_missing_final_newline() {
    // Leading blank lines, several separators, a whitespace-only separator
    // and no newline at the very end.
    let text = "\n\nPackage: a\nVersion: 1\n\n\n   \t\nPackage: b\n \t \nPackage: c\nVersion: 3";
    let ps = parse(text);
    let names: Vec<_> = ps.iter().map(|p| p.get("Package").unwrap()).collect();
    assert_eq!(names, ["a", "b", "c"]);
    assert_eq!(ps[2].get("Version"), Some("3"));
    assert_eq!(
        ps.iter().map(Paragraph::line).collect::<Vec<_>>(),
        [3, 8, 10]
    );
    // Raw text and offsets point into the input.
    assert_eq!(ps[0].as_str(), "Package: a\nVersion: 1\n");
    assert_eq!(ps[2].as_str(), "Package: c\nVersion: 3");
    for p in &ps {
        assert_eq!(&text[p.offset()..p.offset() + p.as_str().len()], p.as_str());
    }
    assert!(parse("").is_empty());
    assert!(parse("\n \n\t\n").is_empty());
}

#[test]
fn comments_only_where_allowed() {
    let text = "# leading comment\nSource: x\n# between fields\nBuild-Depends: a,\n# inside a folded field\n b\n#\nDescription: #not a comment\n";
    let ps: Vec<_> = Paragraphs::with_comments(text)
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(ps.len(), 1, "comments do not end a paragraph");
    let p = &ps[0];
    assert_eq!(p.get("Source"), Some("x"));
    assert_eq!(p.get("Build-Depends"), Some("a,\n b"));
    assert_eq!(p.get("Description"), Some("#not a comment"));
    assert_eq!(p.fields().len(), 3);
    // A comment-only "paragraph" is nothing.
    assert_eq!(Paragraphs::with_comments("# a\n\n# b\n").count(), 0);
    // Without comment support, '#' cannot start a field name.
    let (line, reason) = syntax_error(Paragraphs::new("Package: a\n# no\n").next());
    assert_eq!(line, 2);
    assert!(reason.contains('#'), "{reason}");
}

#[test]
fn syntax_errors_name_the_line() {
    let cases: &[(&str, usize, &str)] = &[
        (
            " continuation\n",
            1,
            "continuation line before the first field",
        ),
        ("Package: a\nno colon here\n", 2, "line is not a field"),
        (
            "Package: a\nVersion: 1\npackage: b\n",
            3,
            "duplicate field package",
        ),
        ("Package: a\n: empty\n", 2, "empty field name"),
        ("Package: a\n-Dash: x\n", 2, "starts with '-'"),
        ("Package: a\nSp ace: x\n", 2, "contains a space"),
    ];
    for &(text, line, reason) in cases {
        let (l, r) = syntax_error(Paragraphs::new(text).next());
        assert_eq!(l, line, "{text:?}");
        assert!(r.contains(reason), "{text:?}: {r}");
    }
    // The error is reported once, then iteration stops.
    let mut it = Paragraphs::new("Package: a\n\nbad\n\nPackage: c\n");
    assert!(it.next().unwrap().is_ok());
    let (line, _) = syntax_error(it.next());
    assert_eq!(line, 3);
    assert!(it.next().is_none());
    // Paragraph::parse wants exactly one paragraph.
    assert!(matches!(
        Paragraph::parse("a: 1\n\nb: 2\n"),
        Err(Error::Syntax { line: 3, .. })
    ));
    assert!(matches!(Paragraph::parse("\n"), Err(Error::Syntax { .. })));
}

#[test]
fn display_writes_fields_back() {
    let text = "Package: a\nConffiles:\n /etc/x 1\nDescription: d\n more\n .\n end\nEmpty:\n";
    let p = Paragraph::parse(text).unwrap();
    assert_eq!(p.to_string(), text);
    // Written text parses back to the same fields.
    let again = p.to_string();
    let q = Paragraph::parse(&again).unwrap();
    assert_eq!(
        p.fields()
            .iter()
            .map(|f| (f.name(), f.value()))
            .collect::<Vec<_>>(),
        q.fields()
            .iter()
            .map(|f| (f.name(), f.value()))
            .collect::<Vec<_>>()
    );
    // Normalises spacing after the colon.
    assert_eq!(
        Paragraph::parse("A:x\nB:\t y \n").unwrap().to_string(),
        "A: x\nB: y\n"
    );
}

#[test]
fn paragraph_buf_edits_in_order() {
    let p =
        Paragraph::parse("Package: a\nVersion: 1\nFilename: pool/a.deb\nDescription: d\n long\n")
            .unwrap();
    let mut buf = ParagraphBuf::from(&p);
    assert_eq!(buf.len(), 4);
    assert_eq!(buf.remove("filename").as_deref(), Some("pool/a.deb"));
    assert_eq!(buf.remove("Filename"), None);
    buf.insert(1, "Status", "install ok installed").unwrap();
    buf.set("version", "2").unwrap(); // replaced in place, keeps "Version"
    buf.set("Conffiles", "\n /etc/a 00").unwrap(); // appended
    assert_eq!(buf.get("VERSION"), Some("2"));
    assert_eq!(
        buf.to_string(),
        "Package: a\nStatus: install ok installed\nVersion: 2\nDescription: d\n long\nConffiles:\n /etc/a 00\n"
    );
    // Inserting an existing name moves it.
    buf.insert(0, "Version", "3").unwrap();
    assert_eq!(buf.fields().next(), Some(("Version", "3")));
    assert_eq!(buf.len(), 5);
    // Out-of-range positions append.
    buf.insert(99, "Last", "x").unwrap();
    assert_eq!(buf.fields().last(), Some(("Last", "x")));
    // What it writes parses back to the same fields.
    let text = buf.to_string();
    let back = ParagraphBuf::from(&Paragraph::parse(&text).unwrap());
    assert_eq!(back, buf);
    assert!(ParagraphBuf::new().is_empty());
}

#[test]
fn paragraph_buf_rejects_what_cannot_be_written_back() {
    let mut buf = ParagraphBuf::new();
    let bad: &[(&str, &str, &str)] = &[
        ("", "x", "empty field name"),
        ("#x", "x", "starts with '#'"),
        ("a:b", "x", "space, colon"),
        ("A", " x", "whitespace around its first line"),
        ("A", "x\nno indent", "does not start with a space"),
        ("A", "x\n \n y", "blank"),
        ("A", "x\n", "ends with whitespace"),
        ("A", "x ", "whitespace"),
    ];
    for &(name, value, reason) in bad {
        match buf.set(name, value) {
            Err(Error::InvalidField { name: n, reason: r }) => {
                assert_eq!(n, name);
                assert!(r.contains(reason), "{name:?} {value:?}: {r}");
            }
            other => panic!("{name:?} {value:?}: {other:?}"),
        }
        assert!(buf.insert(0, name, value).is_err());
    }
    assert!(buf.is_empty());
    buf.set("A", "x\n .\n y").unwrap();
    assert_eq!(buf.to_string(), "A: x\n .\n y\n");
}
