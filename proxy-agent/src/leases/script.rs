//! Splits an SQL script into statements the way the `mariadb` command-line
//! client does: `DELIMITER xx` lines change the delimiter (so a procedure
//! body full of `;` is one statement), and a delimiter inside a string, a
//! quoted name or a comment does not count. The server never sees
//! `DELIMITER`: it is the client's command, and so it is ours.

use std::fmt;

/// One statement of a script, without its delimiter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    /// The line of the script the statement starts on (1-based).
    pub line: usize,
    pub text: String,
}

/// A script the splitter cannot read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptError {
    pub line: usize,
    pub problem: String,
}

impl fmt::Display for ScriptError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.problem)
    }
}

impl std::error::Error for ScriptError {}

#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    Code,
    /// Inside a quote: `'`, `"` or a backtick.
    Quoted(char),
    LineComment,
    BlockComment,
}

/// Splits `script` into statements. Statements that are only whitespace and
/// comments are left out; a last statement without a delimiter is kept.
pub fn split(script: &str) -> Result<Vec<Statement>, ScriptError> {
    let chars: Vec<char> = script.chars().collect();
    let mut delimiter: Vec<char> = vec![';'];
    let mut out = Vec::new();
    let mut text = String::new();
    let mut has_code = false;
    let mut start_line = 1;
    let mut line = 1;
    let mut state = State::Code;
    let mut quote_line = 0;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let at_line_start = i == 0 || chars[i - 1] == '\n';
        match state {
            State::Code => {
                if at_line_start {
                    if let Some((new, consumed)) = delimiter_command(&chars[i..]) {
                        if has_code {
                            return Err(ScriptError {
                                line,
                                problem: "DELIMITER inside an unfinished statement".into(),
                            });
                        }
                        if new.is_empty() || new.contains(&'\\') {
                            return Err(ScriptError {
                                line,
                                problem: "DELIMITER needs a delimiter without `\\`, e.g. `DELIMITER $$`".into(),
                            });
                        }
                        delimiter = new;
                        text.clear();
                        i += consumed;
                        line += 1;
                        continue;
                    }
                }
                if chars[i..].starts_with(&delimiter) {
                    if has_code {
                        out.push(Statement { line: start_line, text: text.trim().to_string() });
                    }
                    text.clear();
                    has_code = false;
                    i += delimiter.len();
                    continue;
                }
                match c {
                    '\'' | '"' | '`' => {
                        state = State::Quoted(c);
                        quote_line = line;
                    }
                    '#' => state = State::LineComment,
                    '-' if chars.get(i + 1) == Some(&'-') && chars.get(i + 2).is_none_or(|n| n.is_whitespace()) => {
                        state = State::LineComment
                    }
                    '/' if chars.get(i + 1) == Some(&'*') => {
                        state = State::BlockComment;
                        quote_line = line;
                        text.push_str("/*");
                        i += 2;
                        continue;
                    }
                    _ => {}
                }
                if !has_code && !c.is_whitespace() && matches!(state, State::Code | State::Quoted(_)) {
                    // The statement starts here; comments before it are not sent.
                    has_code = true;
                    start_line = line;
                    text.clear();
                }
            }
            State::Quoted(q) => {
                if c == '\\' && q != '`' {
                    // An escaped character, whatever it is.
                    text.push(c);
                    if let Some(&n) = chars.get(i + 1) {
                        text.push(n);
                        if n == '\n' {
                            line += 1;
                        }
                    }
                    i += 2;
                    continue;
                }
                if c == q {
                    if chars.get(i + 1) == Some(&q) {
                        // A doubled quote stands for itself.
                        text.push(c);
                        text.push(c);
                        i += 2;
                        continue;
                    }
                    state = State::Code;
                }
            }
            State::LineComment => {
                if c == '\n' {
                    state = State::Code;
                }
            }
            State::BlockComment => {
                if c == '*' && chars.get(i + 1) == Some(&'/') {
                    text.push_str("*/");
                    state = State::Code;
                    i += 2;
                    continue;
                }
            }
        }
        text.push(c);
        if c == '\n' {
            line += 1;
        }
        i += 1;
    }
    match state {
        State::Quoted(q) => {
            return Err(ScriptError { line: quote_line, problem: format!("the quote {q} opened here is never closed") })
        }
        State::BlockComment => {
            return Err(ScriptError { line: quote_line, problem: "the comment /* opened here is never closed".into() })
        }
        State::Code | State::LineComment => {}
    }
    if has_code {
        out.push(Statement { line: start_line, text: text.trim().to_string() });
    }
    Ok(out)
}

/// A `DELIMITER xx` line at `rest`: the new delimiter and the characters the
/// line takes (with its newline).
fn delimiter_command(rest: &[char]) -> Option<(Vec<char>, usize)> {
    let end = rest.iter().position(|&c| c == '\n').unwrap_or(rest.len());
    let line: String = rest[..end].iter().collect();
    let trimmed = line.trim_start();
    let (word, arg) = trimmed.split_once(char::is_whitespace)?;
    if !word.eq_ignore_ascii_case("delimiter") {
        return None;
    }
    let new: Vec<char> = arg.trim().chars().collect();
    Some((new, (end + 1).min(rest.len())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(script: &str) -> Vec<String> {
        split(script).unwrap().into_iter().map(|s| s.text).collect()
    }

    #[test]
    fn plain_statements() {
        assert_eq!(texts("SELECT 1;\nSELECT 2 ;  \n\nSELECT 3"), ["SELECT 1", "SELECT 2", "SELECT 3"]);
    }

    #[test]
    fn delimiter_blocks_keep_bodies_whole() {
        let script = "CREATE TABLE t (a INT);\nDELIMITER $$\nCREATE PROCEDURE p()\nBEGIN\n  SELECT 1;\n  SELECT 2;\nEND$$\ndelimiter ;\nSELECT 3;\n";
        let got = split(script).unwrap();
        assert_eq!(got.len(), 3);
        assert_eq!(got[0].text, "CREATE TABLE t (a INT)");
        assert_eq!(got[1].text, "CREATE PROCEDURE p()\nBEGIN\n  SELECT 1;\n  SELECT 2;\nEND");
        assert_eq!(got[1].line, 3);
        assert_eq!(got[2], Statement { line: 9, text: "SELECT 3".into() });
    }

    #[test]
    fn delimiters_in_strings_names_and_comments_do_not_count() {
        let script = "SELECT 'a;b', \"c;d\", `e;f`, 'it''s;', 'back\\';slash';\n-- a comment; here\n# another; one\n/* block; */ SELECT 2 /* kept; */;";
        assert_eq!(texts(script), ["SELECT 'a;b', \"c;d\", `e;f`, 'it''s;', 'back\\';slash'", "SELECT 2 /* kept; */"]);
        // `--` without a space after it is an operator, not a comment.
        assert_eq!(texts("SELECT 1--1;SELECT 2;"), ["SELECT 1--1", "SELECT 2"]);
    }

    #[test]
    fn comment_only_pieces_are_dropped() {
        assert_eq!(texts("-- only a comment\n;\n/* and */ ; SELECT 1;\n-- trailing"), ["SELECT 1"]);
        assert!(texts("").is_empty());
    }

    #[test]
    fn mistakes_name_their_line() {
        assert_eq!(split("SELECT 1;\nSELECT 'open;\n").unwrap_err().line, 2);
        assert_eq!(split("SELECT 1;\n\n/* open").unwrap_err().line, 3);
        let e = split("SELECT 1\nDELIMITER $$\n").unwrap_err();
        assert_eq!(e.line, 2);
        assert!(e.problem.contains("unfinished"), "{e}");
        assert!(split("DELIMITER  \nSELECT 1;").is_err());
    }

    #[test]
    fn the_shipped_schema_splits() {
        for m in super::super::migrate::MIGRATIONS {
            let statements = split(m.sql).unwrap();
            assert!(statements
                .iter()
                .all(|s| !s.text.contains("$$") && !s.text.to_uppercase().starts_with("DELIMITER")));
            assert!(statements.iter().any(|s| s.text.starts_with("CREATE OR REPLACE PROCEDURE samp_lease_acquire")));
        }
    }
}
