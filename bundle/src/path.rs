//! Paths inside a bundle: what an archive entry may be called.
//!
//! A bundle path is relative, UTF-8, made of `/`-separated components that
//! are neither empty, `.` nor `..`, contain no NUL or backslash, and are at
//! most [`MAX_COMPONENT`] bytes; the whole path is at most [`MAX_PATH`]
//! bytes and fits a ustar header: a path longer than 100 bytes needs a `/`
//! with at most 155 bytes before it and 100 after it
//! ([`ustar::split`](crate::ustar::split)). Two paths of one bundle may not differ only in letter case, so
//! that extracting on a case-insensitive file system cannot merge them.

/// Longest bundle path, in bytes: what a ustar header holds.
pub const MAX_PATH: usize = crate::ustar::MAX_PATH;
/// Longest path component, in bytes.
pub const MAX_COMPONENT: usize = 255;

/// Why a path is not a bundle path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathProblem {
    /// The bytes are not UTF-8.
    #[error("not UTF-8")]
    NotUtf8,
    /// Starts with `/`.
    #[error("absolute")]
    Absolute,
    /// Has a `..` component.
    #[error("contains `..`")]
    DotDot,
    /// Has an empty or `.` component (`a//b`, `a/./b`, trailing `/`).
    #[error("has an empty or `.` component")]
    EmptyComponent,
    /// Contains a NUL, a backslash or a control character.
    #[error("contains a forbidden character")]
    Character,
    /// Longer than [`MAX_PATH`] or a component longer than [`MAX_COMPONENT`].
    #[error("too long")]
    TooLong,
    /// Longer than 100 bytes, with no `/` that leaves at most 155 bytes
    /// before it and 100 after it.
    #[error("too long for a ustar header (no `/` splits it into at most 155 and 100 bytes)")]
    NoSplit,
}

/// Checks raw path bytes from an archive header or a manifest.
pub fn check_path(bytes: &[u8]) -> Result<&str, PathProblem> {
    let s = std::str::from_utf8(bytes).map_err(|_| PathProblem::NotUtf8)?;
    check_str(s)?;
    Ok(s)
}

/// Checks a path given as a string.
pub fn check_str(s: &str) -> Result<(), PathProblem> {
    if s.len() > MAX_PATH {
        return Err(PathProblem::TooLong);
    }
    if s.starts_with('/') {
        return Err(PathProblem::Absolute);
    }
    if s.chars().any(|c| c == '\0' || c == '\\' || c.is_control()) {
        return Err(PathProblem::Character);
    }
    for part in s.split('/') {
        match part {
            ".." => return Err(PathProblem::DotDot),
            "" | "." => return Err(PathProblem::EmptyComponent),
            p if p.len() > MAX_COMPONENT => return Err(PathProblem::TooLong),
            _ => {}
        }
    }
    if crate::ustar::split(s).is_none() {
        return Err(PathProblem::NoSplit);
    }
    Ok(())
}

/// The form two paths are compared in for case-insensitive collisions.
pub fn fold_case(s: &str) -> String {
    s.to_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_and_bad_paths() {
        assert_eq!(check_path(b"payload/bin/app"), Ok("payload/bin/app"));
        assert_eq!(check_path(b"/etc/passwd"), Err(PathProblem::Absolute));
        assert_eq!(check_path(b"payload/../x"), Err(PathProblem::DotDot));
        assert_eq!(check_path(b"payload//x"), Err(PathProblem::EmptyComponent));
        assert_eq!(check_path(b"payload/./x"), Err(PathProblem::EmptyComponent));
        assert_eq!(check_path(b"payload/x/"), Err(PathProblem::EmptyComponent));
        assert_eq!(check_path(b"payload/\xff"), Err(PathProblem::NotUtf8));
        assert_eq!(check_path(b"payload/a\\..\\b"), Err(PathProblem::Character));
        assert_eq!(check_path(b"payload/a\nb"), Err(PathProblem::Character));
        let long = format!("payload/{}", "a".repeat(256));
        assert_eq!(check_path(long.as_bytes()), Err(PathProblem::TooLong));
        let deep = "payload/".to_string() + &"ab/".repeat(100) + "x";
        assert_eq!(check_path(deep.as_bytes()), Err(PathProblem::TooLong));
        let unsplittable = format!("payload/{}", "a".repeat(120));
        assert_eq!(
            check_path(unsplittable.as_bytes()),
            Err(PathProblem::NoSplit)
        );
        let split = format!("payload/{}/{}", "a".repeat(120), "b".repeat(100));
        assert_eq!(check_path(split.as_bytes()), Ok(split.as_str()));
        assert_eq!(fold_case("Payload/ÄB"), fold_case("payload/äb"));
    }
}
