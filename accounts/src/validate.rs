//! Input rules for usernames, email addresses and passwords.

use crate::error::{Error, Result};

/// The longest accepted username, in characters.
pub const USERNAME_MAX_LEN: usize = 64;
/// The longest accepted email address (RFC 5321 path limit minus the angle brackets).
pub const EMAIL_MAX_LEN: usize = 254;
/// The shortest accepted password, in characters.
pub const PASSWORD_MIN_LEN: usize = 8;
/// The longest accepted password, in characters (bounds the hashing work per request).
pub const PASSWORD_MAX_LEN: usize = 1024;

/// Checks a username: 1 to 64 ASCII letters, digits, `.`, `_` or `-`.
///
/// Only ASCII is accepted so that case-insensitive uniqueness is unambiguous and look-alike
/// Unicode names cannot impersonate each other.
///
/// # Errors
/// [`Error::Validation`] on field `username` saying which rule failed.
pub fn validate_username(username: &str) -> Result<()> {
    if username.is_empty() {
        return Err(Error::validation("username", "must not be empty"));
    }
    if username.chars().count() > USERNAME_MAX_LEN {
        return Err(Error::validation(
            "username",
            format!("must be at most {USERNAME_MAX_LEN} characters"),
        ));
    }
    if let Some(bad) = username
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(Error::validation(
            "username",
            format!("may only contain letters, digits, '.', '_' and '-' (found {bad:?})"),
        ));
    }
    Ok(())
}

/// Checks an email address against a deliberately plain pattern: `local@domain`, at most 254
/// ASCII characters; the local part 1-64 characters of letters, digits and
/// ``!#$%&'*+/=?^_`{|}~.-`` without leading, trailing or doubled dots; the domain at least two
/// dot-separated labels of 1-63 letters, digits or hyphens (not at a label's start or end), the
/// last label not all digits.
///
/// Quoted local parts, IP-literal domains and internationalised addresses are rejected: they are
/// legal but rare, and a mail link that cannot be delivered is worse than a clear error.
///
/// # Errors
/// [`Error::Validation`] on field `email` saying which rule failed.
pub fn validate_email(email: &str) -> Result<()> {
    let fail = |message: &str| Err(Error::validation("email", message));
    if email.is_empty() {
        return fail("must not be empty");
    }
    if email.len() > EMAIL_MAX_LEN || email.chars().count() > EMAIL_MAX_LEN {
        return Err(Error::validation(
            "email",
            format!("must be at most {EMAIL_MAX_LEN} characters"),
        ));
    }
    let Some((local, domain)) = email.split_once('@') else {
        return fail("must contain '@'");
    };
    if domain.contains('@') {
        return fail("must contain exactly one '@'");
    }
    if local.is_empty() || local.len() > 64 {
        return fail("the part before '@' must be 1 to 64 characters");
    }
    const LOCAL_SPECIALS: &str = "!#$%&'*+/=?^_`{|}~.-";
    if !local
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || LOCAL_SPECIALS.contains(c))
    {
        return fail("the part before '@' contains a character that is not allowed");
    }
    if local.starts_with('.') || local.ends_with('.') || local.contains("..") {
        return fail("the part before '@' must not start or end with '.' or contain '..'");
    }
    let labels: Vec<&str> = domain.split('.').collect();
    if labels.len() < 2 {
        return fail("the domain must contain a '.'");
    }
    for label in &labels {
        if label.is_empty() || label.len() > 63 {
            return fail("each part of the domain must be 1 to 63 characters");
        }
        if !label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            return fail("the domain may only contain letters, digits, '-' and '.'");
        }
        if label.starts_with('-') || label.ends_with('-') {
            return fail("a part of the domain must not start or end with '-'");
        }
    }
    if labels
        .last()
        .is_some_and(|tld| tld.chars().all(|c| c.is_ascii_digit()))
    {
        return fail("the domain must end with a name, not a number");
    }
    Ok(())
}

/// Checks a new password: 8 to 1024 characters and not the username (ignoring case).
///
/// No composition rules (digits, symbols): they push users to predictable patterns without
/// adding strength (NIST SP 800-63B).
///
/// # Errors
/// [`Error::Validation`] on field `password` saying which rule failed.
pub fn check_password_policy(password: &str, username: &str) -> Result<()> {
    let len = password.chars().count();
    if len < PASSWORD_MIN_LEN {
        return Err(Error::validation(
            "password",
            format!("must be at least {PASSWORD_MIN_LEN} characters"),
        ));
    }
    if len > PASSWORD_MAX_LEN {
        return Err(Error::validation(
            "password",
            format!("must be at most {PASSWORD_MAX_LEN} characters"),
        ));
    }
    if password.to_lowercase() == username.to_lowercase() {
        return Err(Error::validation(
            "password",
            "must not be the same as the username",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn usernames() {
        for ok in ["a", "Alice", "bob.smith", "x_y-z", "0", &"a".repeat(64)] {
            assert!(validate_username(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            " ",
            "a b",
            "é",
            "a@b",
            &"a".repeat(65),
            "tab\t",
            "ünïcode",
        ] {
            assert!(validate_username(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn emails() {
        for ok in [
            "a@b.co",
            "first.last+tag@sub.example.org",
            "x@xn--80ak6aa92e.com",
            "o'brien@example.ie",
        ] {
            assert!(validate_email(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "plain",
            "@example.com",
            "a@",
            "a@b",
            "a@@b.com",
            "a@b@c.com",
            ".a@b.com",
            "a.@b.com",
            "a..b@c.com",
            "a@-b.com",
            "a@b-.com",
            "a@b..com",
            "a@1.2.3.4",
            "a b@c.com",
            "ä@b.com",
            " a@b.com",
        ] {
            assert!(validate_email(bad).is_err(), "{bad:?}");
        }
        let long = format!("{}@{}.com", "a".repeat(64), "b".repeat(63));
        assert!(validate_email(&long).is_ok());
        let too_long = format!(
            "{}@{}.{}.{}.com",
            "a".repeat(64),
            "b".repeat(63),
            "c".repeat(63),
            "d".repeat(63)
        );
        assert!(too_long.len() > EMAIL_MAX_LEN);
        assert!(validate_email(&too_long).is_err());
    }

    #[test]
    fn password_policy() {
        assert!(check_password_policy("short", "bob").is_err());
        assert!(check_password_policy("exactly8", "bob").is_ok());
        assert!(check_password_policy("Alice.Smith", "alice.smith").is_err());
        assert!(check_password_policy(&"x".repeat(1024), "bob").is_ok());
        assert!(check_password_policy(&"x".repeat(1025), "bob").is_err());
        // Characters, not bytes: 8 multi-byte characters are enough.
        assert!(check_password_policy("ééééééé€", "bob").is_ok());
    }

    proptest! {
        #[test]
        fn valid_usernames_are_accepted(name in "[A-Za-z0-9._-]{1,64}") {
            prop_assert!(validate_username(&name).is_ok());
        }

        #[test]
        fn usernames_with_a_foreign_char_are_rejected(
            prefix in "[A-Za-z0-9._-]{0,30}",
            bad in "[^A-Za-z0-9._-]",
            suffix in "[A-Za-z0-9._-]{0,30}",
        ) {
            let name = format!("{prefix}{bad}{suffix}");
            prop_assert!(validate_username(&name).is_err());
        }

        #[test]
        fn long_usernames_are_rejected(name in "[A-Za-z0-9._-]{65,200}") {
            prop_assert!(validate_username(&name).is_err());
        }

        #[test]
        fn valid_emails_are_accepted(
            local in "[a-z0-9+_-]{1,20}(\\.[a-z0-9+_-]{1,20}){0,2}",
            labels in proptest::collection::vec("[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?", 1..4),
            tld in "[a-z]{2,10}",
        ) {
            let email = format!("{local}@{}.{tld}", labels.join("."));
            prop_assert!(validate_email(&email).is_ok(), "{}", email);
        }

        #[test]
        fn emails_without_exactly_one_at_are_rejected(s in "[a-z0-9.@-]{0,80}") {
            prop_assume!(s.matches('@').count() != 1);
            prop_assert!(validate_email(&s).is_err());
        }

        #[test]
        fn emails_with_whitespace_or_non_ascii_are_rejected(
            local in "[a-z]{1,10}",
            bad in "[ \t\n\u{e9}\u{4e2d}<>(),;:\\[\\]\"]",
        ) {
            let a = format!("{local}{bad}@example.com");
            let b = format!("{local}@exa{bad}mple.com");
            prop_assert!(validate_email(&a).is_err(), "{:?}", a);
            prop_assert!(validate_email(&b).is_err(), "{:?}", b);
        }

        #[test]
        fn validation_never_panics(s in "\\PC{0,300}") {
            let _ = validate_email(&s);
            let _ = validate_username(&s);
            let _ = check_password_policy(&s, "user");
        }
    }
}
