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
    let mut s = Splitter::new(script);
    while s.i < s.chars.len() {
        let c = s.chars[s.i];
        let handled = match s.state {
            State::Code => s.code(c)?,
            State::Quoted(q) => s.quoted(q, c),
            State::LineComment => {
                if c == '\n' {
                    s.state = State::Code;
                }
                false
            }
            State::BlockComment => s.block_comment(c),
        };
        if !handled {
            s.take(c);
        }
    }
    s.finish()
}

/// The splitter's place in the script: what it has read of the statement
/// under way, and the statements before it.
struct Splitter {
    chars: Vec<char>,
    delimiter: Vec<char>,
    out: Vec<Statement>,
    text: String,
    has_code: bool,
    start_line: usize,
    line: usize,
    state: State,
    quote_line: usize,
    i: usize,
}

impl Splitter {
    fn new(script: &str) -> Self {
        Splitter {
            chars: script.chars().collect(),
            delimiter: vec![';'],
            out: Vec::new(),
            text: String::new(),
            has_code: false,
            start_line: 1,
            line: 1,
            state: State::Code,
            quote_line: 0,
            i: 0,
        }
    }

    /// Keeps character `c` of the statement and moves past it.
    fn take(&mut self, c: char) {
        self.text.push(c);
        if c == '\n' {
            self.line += 1;
        }
        self.i += 1;
    }

    /// `c` outside quotes and comments. True when it was dealt with (and the
    /// splitter moved on), false when it is to be kept as it is.
    fn code(&mut self, c: char) -> Result<bool, ScriptError> {
        let at_line_start = self.i == 0 || self.chars[self.i - 1] == '\n';
        if at_line_start && self.delimiter_line()? {
            return Ok(true);
        }
        if self.chars[self.i..].starts_with(&self.delimiter) {
            if self.has_code {
                self.out.push(Statement { line: self.start_line, text: self.text.trim().to_string() });
            }
            self.text.clear();
            self.has_code = false;
            self.i += self.delimiter.len();
            return Ok(true);
        }
        let chars = &self.chars;
        let i = self.i;
        match c {
            '\'' | '"' | '`' => {
                self.state = State::Quoted(c);
                self.quote_line = self.line;
            }
            '#' => self.state = State::LineComment,
            '-' if chars.get(i + 1) == Some(&'-') && chars.get(i + 2).is_none_or(|n| n.is_whitespace()) => {
                self.state = State::LineComment
            }
            '/' if chars.get(i + 1) == Some(&'*') => {
                self.state = State::BlockComment;
                self.quote_line = self.line;
                self.text.push_str("/*");
                self.i += 2;
                return Ok(true);
            }
            _ => {}
        }
        if !self.has_code && !c.is_whitespace() && matches!(self.state, State::Code | State::Quoted(_)) {
            // The statement starts here; comments before it are not sent.
            self.has_code = true;
            self.start_line = self.line;
            self.text.clear();
        }
        Ok(false)
    }

    /// A `DELIMITER xx` line at the splitter's place, taken (true), or none.
    fn delimiter_line(&mut self) -> Result<bool, ScriptError> {
        let Some((new, consumed)) = delimiter_command(&self.chars[self.i..]) else {
            return Ok(false);
        };
        let line = self.line;
        if self.has_code {
            return Err(ScriptError { line, problem: "DELIMITER inside an unfinished statement".into() });
        }
        if new.is_empty() || new.contains(&'\\') {
            return Err(ScriptError {
                line,
                problem: "DELIMITER needs a delimiter without `\\`, e.g. `DELIMITER $$`".into(),
            });
        }
        self.delimiter = new;
        self.text.clear();
        self.i += consumed;
        self.line += 1;
        Ok(true)
    }

    /// `c` inside a quote `q`: true when it was dealt with.
    fn quoted(&mut self, q: char, c: char) -> bool {
        let next = self.chars.get(self.i + 1).copied();
        if c == '\\' && q != '`' {
            // An escaped character, whatever it is.
            self.text.push(c);
            if let Some(n) = next {
                self.text.push(n);
                if n == '\n' {
                    self.line += 1;
                }
            }
            self.i += 2;
            return true;
        }
        if c == q {
            if next == Some(q) {
                // A doubled quote stands for itself.
                self.text.push(c);
                self.text.push(c);
                self.i += 2;
                return true;
            }
            self.state = State::Code;
        }
        false
    }

    /// `c` inside a `/* */` comment: true when it was dealt with.
    fn block_comment(&mut self, c: char) -> bool {
        if c == '*' && self.chars.get(self.i + 1) == Some(&'/') {
            self.text.push_str("*/");
            self.state = State::Code;
            self.i += 2;
            return true;
        }
        false
    }

    /// The end of the script: an open quote or comment is an error, a last
    /// statement without a delimiter is kept.
    fn finish(mut self) -> Result<Vec<Statement>, ScriptError> {
        let quote_line = self.quote_line;
        match self.state {
            State::Quoted(q) => {
                return Err(ScriptError {
                    line: quote_line,
                    problem: format!("the quote {q} opened here is never closed"),
                })
            }
            State::BlockComment => {
                return Err(ScriptError {
                    line: quote_line,
                    problem: "the comment /* opened here is never closed".into(),
                })
            }
            State::Code | State::LineComment => {}
        }
        if self.has_code {
            self.out.push(Statement { line: self.start_line, text: self.text.trim().to_string() });
        }
        Ok(self.out)
    }
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
            let acquire =
                statements.iter().any(|s| s.text.starts_with("CREATE OR REPLACE PROCEDURE samp_lease_acquire"));
            assert_eq!(acquire, m.version == 1, "{}", m.name);
        }
    }
}
