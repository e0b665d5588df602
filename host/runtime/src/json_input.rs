//! JSON from untrusted input, with errors that never echo it.
//!
//! serde's messages quote what they refused: an unknown field's name, a
//! value of the wrong type. A caller that puts a raw key where a field name
//! goes would see it again in the error, in a log, or in a response body.
//! These errors say where the problem is and what was expected, never what
//! was there.

use serde::de::DeserializeOwned;

/// Why a JSON document was refused: a position and a category, and the
/// fields that were expected. Its text holds nothing taken from the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} at line {line} column {column}; expected {expected}")]
pub struct JsonInputError {
    what: String,
    line: usize,
    column: usize,
    expected: &'static str,
}

impl JsonInputError {
    /// Describes `error`, met while parsing a document shaped as `expected`
    /// (for example `{"key","app","op"}`).
    pub fn new(error: &serde_json::Error, expected: &'static str) -> Self {
        use serde_json::error::Category;
        let message = error.to_string();
        let what = match error.classify() {
            Category::Io => "the input could not be read".to_owned(),
            Category::Syntax => "not valid JSON".to_owned(),
            Category::Eof => "the JSON ends early".to_owned(),
            // "missing field `app`" names one of our fields, never the input's.
            Category::Data if message.starts_with("missing field `") => message
                .split_once(" at line ")
                .map_or(message.as_str(), |(head, _)| head)
                .to_owned(),
            Category::Data if message.starts_with("unknown field `") => {
                "an unknown field".to_owned()
            }
            Category::Data => "a field of the wrong type or value".to_owned(),
        };
        Self {
            what,
            line: error.line(),
            column: error.column(),
            expected,
        }
    }
}

/// Parses `bytes` as a `T`; on failure, an error that names no input.
pub fn parse<T: DeserializeOwned>(
    bytes: &[u8],
    expected: &'static str,
) -> Result<T, JsonInputError> {
    serde_json::from_slice(bytes).map_err(|error| JsonInputError::new(&error, expected))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[expect(dead_code, reason = "only parsed")]
    struct Check {
        key: Option<String>,
        app: String,
    }

    const SECRET: &str = "ks_SECRETsecretSECRETsecretSECRETse000000";

    #[test]
    fn no_error_echoes_a_name_or_value_from_the_input() {
        for input in [
            format!(r#"{{"{SECRET}": 1, "app": "a"}}"#),
            format!(r#"{{"key": 5, "app": "{SECRET}"}}"#),
            format!(r#"{{"key": "k", "app": ["{SECRET}"]}}"#),
            format!(r#"{{"app": {SECRET}}}"#),
            format!(r#"{{"app": "{SECRET}"#),
        ] {
            let error = parse::<Check>(input.as_bytes(), r#"{"key","app"}"#).unwrap_err();
            let text = error.to_string();
            assert!(!text.contains("SECRET"), "{text}");
            assert!(text.contains(r#"expected {"key","app"}"#), "{text}");
        }
    }

    #[test]
    fn a_missing_field_is_named() {
        let error = parse::<Check>(br#"{"key": "k"}"#, "x").unwrap_err();
        assert!(
            error.to_string().starts_with("missing field `app`"),
            "{error}"
        );
    }
}
