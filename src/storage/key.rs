//! Object keys that stay inside the store: the check every key from a request or a
//! job's payload passes before it becomes a path or an S3 key. Free of the
//! storage's types, so it can be fuzzed on its own.

/// Relative, `/`-separated, no empty, `.` or `..` segment, and only ASCII letters,
/// digits and `-_./`: nothing that could climb out of the store's folder, encoded
/// or not.
pub fn is_safe(key: &str) -> bool {
    !key.is_empty()
        && !key.starts_with('/')
        && key
            .split('/')
            .all(|part| !part.is_empty() && part != "." && part != "..")
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./".contains(&b))
}
