//! The one error type of the crate: which entry of the spec was rejected and why.

use std::fmt;

/// Longest stretch of an offending value echoed back in a message, so a
/// megabyte of garbage in a config file does not become a megabyte of log.
const MAX_ECHO_CHARS: usize = 80;

/// A rejected [`PacSpec`](crate::PacSpec) entry.
///
/// `field` is a path into the spec such as `bypass[3]`, `slots[0].http_port` or
/// `on_premise.indicator_host`; `value` is the offending text when there is one.
/// Validation is all-or-nothing, so the error is not retryable: the admin has to
/// fix the entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PacError {
    field: String,
    value: Option<String>,
    reason: String,
}

impl PacError {
    pub(crate) fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        PacError {
            field: field.into(),
            value: None,
            reason: reason.into(),
        }
    }

    pub(crate) fn with_value(field: impl Into<String>, value: &str, reason: impl Into<String>) -> Self {
        PacError {
            field: field.into(),
            value: Some(value.to_owned()),
            reason: reason.into(),
        }
    }

    /// Path of the rejected entry, e.g. `bypass[3]`.
    pub fn field(&self) -> &str {
        &self.field
    }

    /// The rejected text as the admin wrote it, when the entry is a string.
    pub fn value(&self) -> Option<&str> {
        self.value.as_deref()
    }

    /// Why the entry was rejected.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

impl fmt::Display for PacError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.field)?;
        if let Some(v) = &self.value {
            f.write_str(" '")?;
            write_echo(f, v)?;
            f.write_str("'")?;
        }
        write!(f, ": {}", self.reason)
    }
}

impl std::error::Error for PacError {}

/// Writes `v` so that control characters, quotes and non-ASCII cannot forge
/// extra log lines or hide what was really written (e.g. a right-to-left
/// override); long values are cut.
fn write_echo(f: &mut fmt::Formatter<'_>, v: &str) -> fmt::Result {
    for (n, c) in v.chars().enumerate() {
        if n == MAX_ECHO_CHARS {
            return f.write_str("...");
        }
        match c {
            ' '..='~' if c != '\'' && c != '\\' => write!(f, "{c}")?,
            _ => write!(f, "{}", c.escape_default())?,
        }
    }
    Ok(())
}

/// Describes a character for a "not allowed" message in a way that shows
/// invisible and look-alike characters unambiguously.
pub(crate) fn describe_char(c: char) -> String {
    match c {
        ' ' => "a space".to_owned(),
        '\t' => "a tab".to_owned(),
        '\n' => "a newline".to_owned(),
        '\r' => "a carriage return".to_owned(),
        c if c.is_ascii_control() => format!("control character U+{:04X}", c as u32),
        c if !c.is_ascii() => format!(
            "non-ASCII character U+{:04X} (write internationalised names in their ASCII 'xn--' form)",
            c as u32
        ),
        c => format!("'{c}'"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_field_value_and_reason() {
        let e = PacError::with_value("bypass[3]", "10.0.0.0/33", "prefix length 33 exceeds 32");
        assert_eq!(e.to_string(), "bypass[3] '10.0.0.0/33': prefix length 33 exceeds 32");
        let e = PacError::new("slots", "at least one slot is required");
        assert_eq!(e.to_string(), "slots: at least one slot is required");
    }

    #[test]
    fn display_escapes_control_quotes_and_non_ascii() {
        let e = PacError::with_value("bypass[0]", "a'\n\u{202e}b\\", "x");
        assert_eq!(e.to_string(), r"bypass[0] 'a\'\n\u{202e}b\\': x");
    }

    #[test]
    fn display_truncates_long_values() {
        let long = "a".repeat(1000);
        let e = PacError::with_value("bypass[0]", &long, "too long");
        let s = e.to_string();
        assert!(s.len() < 120, "{s}");
        assert!(s.contains("..."));
    }
}
