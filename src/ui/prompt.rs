//! Questions on a terminal (`w4b hive new` without `--yes`): one line per answer, the
//! default in brackets taken by an empty answer, a wrong answer explained and asked again —
//! `cargo init` meets `npm init`. Prompts go to stderr (stdout is for data); answers are
//! read line by line from stdin, so the terminal's own line editing works and a test can
//! answer through a pseudo-terminal.

use std::io::{BufRead, Write};

/// Why no answer could be had.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum PromptError {
    #[error("the terminal closed before `{question}` was answered")]
    #[diagnostic(
        code(w4b::prompt::closed),
        help("answer every question, or pass `--yes` with the values as flags")
    )]
    Closed { question: String },
    #[error("cannot read the answer to `{question}`: {source}")]
    #[diagnostic(
        code(w4b::prompt::io),
        help("run the command on a terminal, or pass `--yes` with flags")
    )]
    Io {
        question: String,
        source: std::io::Error,
    },
}

/// Asks questions on `input`/`output`.
pub struct Prompter<R, W> {
    input: R,
    output: W,
}

impl<R: BufRead, W: Write> Prompter<R, W> {
    pub fn new(input: R, output: W) -> Self {
        Prompter { input, output }
    }

    /// Asks `question` until `check` accepts the answer (the default when it is empty);
    /// `check`'s error is shown and the question asked again.
    pub fn ask<T>(
        &mut self,
        question: &str,
        default: Option<&str>,
        check: impl Fn(&str) -> Result<T, String>,
    ) -> Result<T, PromptError> {
        loop {
            let shown = match default {
                Some(d) if !d.is_empty() => format!("{question} [{d}]: "),
                _ => format!("{question}: "),
            };
            let io = |source| PromptError::Io {
                question: question.to_owned(),
                source,
            };
            self.output.write_all(shown.as_bytes()).map_err(io)?;
            self.output.flush().map_err(io)?;
            let mut line = String::new();
            if self.input.read_line(&mut line).map_err(io)? == 0 {
                return Err(PromptError::Closed {
                    question: question.to_owned(),
                });
            }
            let answer = line.trim();
            let answer = if answer.is_empty() {
                default.unwrap_or("")
            } else {
                answer
            };
            match check(answer) {
                Ok(v) => return Ok(v),
                Err(why) => {
                    let _ = writeln!(self.output, "  {why}");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wrong_answer_is_explained_and_asked_again_and_empty_takes_the_default() {
        let input = b"abc\n42\n\n".as_slice();
        let mut out = Vec::new();
        let mut p = Prompter::new(input, &mut out);
        let n: u32 = p
            .ask("Number", None, |a| {
                a.parse().map_err(|_| format!("`{a}` is not a number"))
            })
            .unwrap();
        let d: String = p.ask("Zone", Some("UTC"), |a| Ok(a.to_owned())).unwrap();
        assert_eq!((n, d.as_str()), (42, "UTC"));
        let e = p.ask("More", None, |a| Ok(a.to_owned())).unwrap_err();
        assert!(matches!(e, PromptError::Closed { .. }));
        let shown = String::from_utf8(out).unwrap();
        assert_eq!(
            shown,
            "Number:   `abc` is not a number\nNumber: Zone [UTC]: More: "
        );
    }
}
