//! A config mistake, and serde_yaml's syntax errors as one.

use std::fmt;

/// A config mistake: where it is and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: String,
    pub line: Option<usize>,
    pub field: String,
    pub problem: String,
    pub fix: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "config {}", self.file)?;
        if let Some(line) = self.line {
            write!(f, " line {line}")?;
        }
        if !self.field.is_empty() {
            write!(f, ": `{}`", self.field)?;
        }
        write!(f, ": {}", self.problem)?;
        if !self.fix.is_empty() {
            write!(f, "; fix: {}", self.fix)?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

pub(super) fn syntax_error(file: &str, e: &serde_yaml::Error) -> ConfigError {
    let message = e.to_string();
    // serde_yaml appends " at line L column C"; we print the line ourselves.
    let problem = match message.find(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message.clone(),
    };
    let field = problem
        .split_once(": ")
        .filter(|(path, _)| !path.contains(' '))
        .map(|(path, _)| path.to_string())
        .unwrap_or_default();
    let problem = if field.is_empty() { problem } else { problem[field.len() + 2..].to_string() };
    let fix = if problem.contains("unknown field") {
        "remove or correct the field; the README's config reference lists every field".into()
    } else if problem.contains("missing field") {
        "add the field; the README's config reference shows an example".into()
    } else if problem.contains("unknown variant") {
        "use one of the values the message lists".into()
    } else {
        "check the YAML syntax and types at that line".into()
    };
    ConfigError { file: file.into(), line: e.location().map(|l| l.line()), field, problem, fix }
}
