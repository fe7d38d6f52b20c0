//! JSON files as people save them: a byte order mark at the start, errors placed within one
//! line of a JSON Lines file.

/// `text` without the byte order mark some editors put at its start (Windows Notepad's UTF-8),
/// which no JSON reader takes.
pub fn without_bom(text: &str) -> &str {
    text.strip_prefix('\u{feff}').unwrap_or(text)
}

/// A JSON error in one line of a JSON Lines file, placed by its column: serde's "at line 1"
/// would be the line's own first line, not the file's.
pub fn line_error(e: &serde_json::Error) -> String {
    let message = e.to_string();
    let message = message
        .rsplit_once(" at line ")
        .map_or(&*message, |(m, _)| m);
    format!("{message}, at column {}", e.column())
}
