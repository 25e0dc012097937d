//! A small GNU `getopt_long` work-alike: option clusters (`-b2m`, `-nlong`), long options with
//! unique-prefix abbreviations (`--block=2m`, `--pool 100G`), optional arguments that only attach
//! (`-nshort`, `--numeric-only=long`), non-option words skipped and `--` ending the options.
//! Errors carry glibc's wording so the tool's messages match the C original's.

/// Whether an option takes an argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HasArg {
    /// A flag (`-h`).
    No,
    /// The argument follows, attached or as the next word (`-b 2m`, `-b2m`).
    Required,
    /// The argument only counts when attached (`-nshort`, `--numeric-only=short`).
    Optional,
}

/// An option: its short letter, long name and argument kind.
#[derive(Debug, Clone, Copy)]
pub struct OptSpec {
    /// The short letter, which is also what the parser reports for the long form.
    pub short: char,
    /// The long name without the leading `--`.
    pub long: &'static str,
    /// Whether it takes an argument.
    pub has_arg: HasArg,
}

/// Walks the arguments and yields `(letter, argument)` pairs in command-line order.
pub struct Getopt<'a> {
    prog: &'a str,
    args: &'a [String],
    specs: &'a [OptSpec],
    next_word: usize,
    /// Inside a short cluster: the word and the byte offset of the next letter.
    cluster: Option<(usize, usize)>,
    done: bool,
}

/// What the parser yields: an option with its argument, or a diagnostic line.
pub type Parsed = Result<(char, Option<String>), String>;

impl<'a> Getopt<'a> {
    /// Starts parsing `args` (the words after the program name); `prog` prefixes diagnostics.
    pub fn new(prog: &'a str, args: &'a [String], specs: &'a [OptSpec]) -> Getopt<'a> {
        Getopt {
            prog,
            args,
            specs,
            next_word: 0,
            cluster: None,
            done: false,
        }
    }

    fn short_spec(&self, letter: char) -> Option<OptSpec> {
        self.specs.iter().copied().find(|s| s.short == letter)
    }

    fn next_short(&mut self, word: usize, offset: usize) -> Parsed {
        let text = &self.args[word];
        let letter = text[offset..].chars().next().unwrap_or('?');
        let rest_at = offset + letter.len_utf8();
        let rest = &text[rest_at..];
        self.cluster = None;
        let Some(spec) = self.short_spec(letter) else {
            if !rest.is_empty() {
                self.cluster = Some((word, rest_at));
            }
            return Err(format!("{}: invalid option -- '{letter}'", self.prog));
        };
        match spec.has_arg {
            HasArg::No => {
                if !rest.is_empty() {
                    self.cluster = Some((word, rest_at));
                }
                Ok((letter, None))
            }
            HasArg::Optional => Ok((letter, (!rest.is_empty()).then(|| rest.to_string()))),
            HasArg::Required if !rest.is_empty() => Ok((letter, Some(rest.to_string()))),
            HasArg::Required => match self.args.get(self.next_word) {
                Some(value) => {
                    self.next_word += 1;
                    Ok((letter, Some(value.clone())))
                }
                None => Err(format!(
                    "{}: option requires an argument -- '{letter}'",
                    self.prog
                )),
            },
        }
    }

    fn next_long(&mut self, body: &str) -> Parsed {
        let (name, inline) = match body.split_once('=') {
            Some((name, value)) => (name, Some(value.to_string())),
            None => (body, None),
        };
        let exact = self.specs.iter().find(|s| s.long == name);
        let matches: Vec<&OptSpec> = self
            .specs
            .iter()
            .filter(|s| s.long.starts_with(name))
            .collect();
        let spec = match (exact, matches.as_slice()) {
            (Some(spec), _) => *spec,
            (None, [spec]) => **spec,
            (None, []) => {
                return Err(format!("{}: unrecognized option '--{body}'", self.prog));
            }
            (None, many) => {
                let names: Vec<String> = many.iter().map(|s| format!("'--{}'", s.long)).collect();
                return Err(format!(
                    "{}: option '--{body}' is ambiguous; possibilities: {}",
                    self.prog,
                    names.join(" ")
                ));
            }
        };
        match (spec.has_arg, inline) {
            (HasArg::No, Some(_)) => Err(format!(
                "{}: option '--{}' doesn't allow an argument",
                self.prog, spec.long
            )),
            (HasArg::No, None) | (HasArg::Optional, None) => Ok((spec.short, None)),
            (_, Some(value)) => Ok((spec.short, Some(value))),
            (HasArg::Required, None) => match self.args.get(self.next_word) {
                Some(value) => {
                    self.next_word += 1;
                    Ok((spec.short, Some(value.clone())))
                }
                None => Err(format!(
                    "{}: option '--{}' requires an argument",
                    self.prog, spec.long
                )),
            },
        }
    }
}

impl Iterator for Getopt<'_> {
    type Item = Parsed;

    fn next(&mut self) -> Option<Parsed> {
        if let Some((word, offset)) = self.cluster {
            return Some(self.next_short(word, offset));
        }
        while !self.done {
            let word = self.next_word;
            let text = self.args.get(word)?;
            self.next_word += 1;
            if text == "--" {
                self.done = true;
            } else if let Some(body) = text.strip_prefix("--") {
                return Some(self.next_long(body));
            } else if text.len() > 1 && text.starts_with('-') {
                return Some(self.next_short(word, 1));
            }
            // Anything else is an operand: GNU getopt permutes it to the end; the tool ignores it.
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPECS: [OptSpec; 3] = [
        OptSpec {
            short: 'b',
            long: "block-size",
            has_arg: HasArg::Required,
        },
        OptSpec {
            short: 'n',
            long: "numeric-only",
            has_arg: HasArg::Optional,
        },
        OptSpec {
            short: 'h',
            long: "help",
            has_arg: HasArg::No,
        },
    ];

    fn parse(words: &[&str]) -> Vec<Parsed> {
        let args: Vec<String> = words.iter().map(|w| w.to_string()).collect();
        Getopt::new("prog", &args, &SPECS).collect()
    }

    #[test]
    fn clusters_and_words() {
        assert_eq!(
            parse(&["-b2m", "x", "-b", "4m", "-nlong", "-n", "short", "-hn"]),
            vec![
                Ok(('b', Some("2m".into()))),
                Ok(('b', Some("4m".into()))),
                Ok(('n', Some("long".into()))),
                Ok(('n', None)),
                Ok(('h', None)),
                Ok(('n', None)),
            ]
        );
    }

    #[test]
    fn long_forms() {
        assert_eq!(
            parse(&[
                "--bl=2m",
                "--block-size",
                "3m",
                "--numeric-only=long",
                "--num",
                "--",
                "-h"
            ]),
            vec![
                Ok(('b', Some("2m".into()))),
                Ok(('b', Some("3m".into()))),
                Ok(('n', Some("long".into()))),
                Ok(('n', None)),
            ]
        );
    }

    #[test]
    fn diagnostics() {
        assert_eq!(
            parse(&["-x"]),
            vec![Err("prog: invalid option -- 'x'".into())]
        );
        assert_eq!(
            parse(&["-b"]),
            vec![Err("prog: option requires an argument -- 'b'".into())]
        );
        assert_eq!(
            parse(&["--bogus=1"]),
            vec![Err("prog: unrecognized option '--bogus=1'".into())]
        );
        assert_eq!(
            parse(&["--block"]),
            vec![Err(
                "prog: option '--block-size' requires an argument".into()
            )]
        );
        assert_eq!(
            parse(&["--help=x"]),
            vec![Err("prog: option '--help' doesn't allow an argument".into())]
        );
        assert_eq!(
            parse(&["--=x"]),
            vec![Err("prog: option '--=x' is ambiguous; possibilities: '--block-size' '--numeric-only' '--help'".into())]
        );
    }
}
