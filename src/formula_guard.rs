//! The CSV formula guard, both ways. A CSV export prefixes `'` to a cell that a
//! spreadsheet would run as a formula (OWASP "CSV injection": `= + - @`, tab, CR),
//! and to a cell that itself starts with `'`, which makes the guard reversible: a
//! CSV import strips exactly one `'` before one of those characters. A value thus
//! survives export and import whatever it starts with (`+55 …` phone numbers,
//! `-` amounts, a name starting with an apostrophe).

use std::borrow::Cow;

/// What a guarded cell may start with.
const GUARDED_STARTS: [char; 7] = ['=', '+', '-', '@', '\t', '\r', '\''];

/// The cell as a CSV export writes it.
pub fn escape(text: &str) -> Cow<'_, str> {
    if text.starts_with(GUARDED_STARTS) {
        Cow::Owned(format!("'{text}"))
    } else {
        Cow::Borrowed(text)
    }
}

/// The cell as a CSV import reads it.
pub fn unescape(cell: &str) -> &str {
    match cell.strip_prefix('\'') {
        Some(rest) if rest.starts_with(GUARDED_STARTS) => rest,
        _ => cell,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formula_like_cells_are_prefixed() {
        assert_eq!(escape("=1+1"), "'=1+1");
        assert_eq!(escape("@SUM(A1)"), "'@SUM(A1)");
        assert_eq!(escape("-2"), "'-2");
        assert_eq!(escape("+55 134126396"), "'+55 134126396");
        assert_eq!(escape("'quoted"), "''quoted");
        assert_eq!(escape("plain"), "plain");
    }

    #[test]
    fn every_value_survives_escape_then_unescape() {
        for value in [
            "",
            "plain",
            "=1+1",
            "+55 134126396",
            "-2",
            "@x",
            "\tx",
            "\rx",
            "'",
            "'x",
            "''",
            "'=x",
            "''=x",
            "a'b",
        ] {
            assert_eq!(unescape(&escape(value)), value, "{value:?}");
        }
        // A cell no export wrote keeps its apostrophe unless it guards.
        assert_eq!(unescape("'plain"), "'plain");
        assert_eq!(unescape("'+1"), "+1");
    }
}
