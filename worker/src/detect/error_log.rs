//! Bounded error lists for the package-database parsers: a garbage file must
//! not fill the report, and a quoted bad value must not either.

/// Errors kept per file; past this only their number is reported.
pub const MAX_ERRORS_PER_FILE: usize = 100;

/// The longest excerpt of input quoted in an error message, in characters.
const EXCERPT_CHARS: usize = 80;

/// Errors of one file, at most [`MAX_ERRORS_PER_FILE`] kept.
#[derive(Debug, Default)]
pub(crate) struct ErrorLog {
    kept: Vec<String>,
    dropped: usize,
}

impl ErrorLog {
    /// Keep `error`, or count it once the list is full.
    pub(crate) fn push(&mut self, error: String) {
        if self.kept.len() < MAX_ERRORS_PER_FILE {
            self.kept.push(error);
        } else {
            self.dropped = self.dropped.saturating_add(1);
        }
    }

    /// The kept errors, and a last line counting the dropped ones.
    pub(crate) fn into_vec(mut self) -> Vec<String> {
        if self.dropped > 0 {
            self.kept
                .push(format!("{} more errors not shown", self.dropped));
        }
        self.kept
    }
}

/// At most [`EXCERPT_CHARS`] characters of `text`, quoted, for error messages.
pub(crate) fn excerpt(text: &str) -> String {
    match text.char_indices().nth(EXCERPT_CHARS) {
        Some((end, _)) => format!("{:?}…", text.get(..end).unwrap_or(text)),
        None => format!("{text:?}"),
    }
}
