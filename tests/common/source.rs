//! Reading Rust source as the checks on it need it: the files, code without comments or
//! literals, and where a braced block ends.

use std::path::{Path, PathBuf};

/// Every `.rs` file under `dir` (not under `node_modules` or `target`), into `out`.
pub fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("read {dir:?}: {e}"));
    for entry in entries {
        let path = entry.expect("a directory entry").path();
        let name = path.file_name().unwrap_or_default();
        if path.is_dir() && name != "node_modules" && name != "target" {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Where the braced block opening at `open` (a `{` of `code`, without literals) ends: the
/// index just after its `}`; `None` when it never closes.
pub fn block_end(code: &str, open: usize) -> Option<usize> {
    let mut depth = 0;
    for (i, c) in code[open..].char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return Some(open + i + 1);
                }
            }
            _ => {}
        }
    }
    None
}

/// The source without comments, and with each string and character literal emptied (`""`,
/// `' '`), so that neither a `//` nor a brace inside one is read as code.
pub fn code_only(source: &str) -> String {
    let mut out = String::with_capacity(source.len());
    let mut chars = source.chars().peekable();
    while let Some(c) = chars.next() {
        // A raw string (`r"..."`, `r#"..."#`, `br#"..."#`): to its quote and as many `#`.
        let after = out.chars().next_back();
        let raw_start = c == 'r'
            && matches!(chars.peek(), Some('"' | '#'))
            && !after.is_some_and(|a| (a.is_alphanumeric() || a == '_') && a != 'b');
        if raw_start {
            let mut hashes = 0;
            while chars.next_if_eq(&'#').is_some() {
                hashes += 1;
            }
            if chars.next_if_eq(&'"').is_none() {
                out.push('r'); // `r#ident`, a raw identifier
                out.push_str(&"#".repeat(hashes));
                continue;
            }
            let closing = format!("\"{}", "#".repeat(hashes));
            let mut seen = String::new();
            for s in chars.by_ref() {
                seen.push(s);
                if seen.ends_with(&closing) {
                    break;
                }
            }
            out.push_str("\"\"");
            continue;
        }
        match c {
            '"' => {
                let mut escaped = false;
                for s in chars.by_ref() {
                    match (escaped, s) {
                        (true, _) => escaped = false,
                        (false, '\\') => escaped = true,
                        (false, '"') => break,
                        _ => {}
                    }
                }
                out.push_str("\"\"");
            }
            // A character literal ('{', '\''), not a lifetime ('a).
            '\'' if matches!(chars.clone().nth(1), Some('\'')) || chars.peek() == Some(&'\\') => {
                let escaped = chars.next() == Some('\\');
                if escaped {
                    chars.next();
                }
                for s in chars.by_ref() {
                    if s == '\'' {
                        break;
                    }
                }
                out.push_str("' '");
            }
            '/' if chars.peek() == Some(&'/') => {
                for rest in chars.by_ref() {
                    if rest == '\n' {
                        out.push('\n');
                        break;
                    }
                }
            }
            '/' if chars.peek() == Some(&'*') => {
                chars.next();
                let mut last = ' ';
                for rest in chars.by_ref() {
                    if last == '*' && rest == '/' {
                        break;
                    }
                    last = rest;
                }
            }
            _ => out.push(c),
        }
    }
    out
}
