//! Output as the original printed it: JSON indented with tabs (Go's `MarshalIndent(v, "", "\t")`)
//! on standard output, errors as `{"Error": "..."}` on standard output with exit status 1.

use std::io::Write;

use serde::Serialize;

/// `value` as tab-indented JSON.
pub fn to_json<T: Serialize>(value: &T) -> String {
    let mut bytes = Vec::new();
    let formatter = serde_json::ser::PrettyFormatter::with_indent(b"\t");
    let mut serializer = serde_json::Serializer::with_formatter(&mut bytes, formatter);
    value
        .serialize(&mut serializer)
        .expect("wire types always serialize");
    String::from_utf8(bytes).expect("serde_json writes UTF-8")
}

/// Prints `value` as tab-indented JSON and a newline.
pub fn print_json<T: Serialize>(value: &T) {
    println!("{}", to_json(value));
}

/// Prints a bare line (a name, a mount point, a URL).
pub fn print_line(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{text}");
}

/// Prints `{"Error": message}` as the original did.
pub fn print_error(message: &str) {
    print_json(&convoy_api::wire::ErrorResponse {
        error: message.to_string(),
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_look_like_the_originals() {
        let text = to_json(&convoy_api::wire::ErrorResponse {
            error: "volume x not found".into(),
        });
        assert_eq!(text, "{\n\t\"Error\": \"volume x not found\"\n}");
    }
}
