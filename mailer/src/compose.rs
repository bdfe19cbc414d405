//! Turning a request into a ready-to-send message: templates, subject, links, MIME.

use std::time::Duration;

use askama::Template;
use lettre::Message;
use lettre::address::Envelope;
use lettre::message::{Mailbox, MultiPart};

use crate::{Error, MessageKind};

/// What the background task needs: the envelope, the formatted bytes and the links to log in
/// outbox mode. The bytes may contain a default password, so this type has no `Debug`.
pub(crate) struct Composed {
    pub(crate) envelope: Envelope,
    pub(crate) bytes: Vec<u8>,
    pub(crate) links: Vec<String>,
}

/// The fixed parts of every message, from the configuration.
#[derive(Debug, Clone)]
pub(crate) struct Branding {
    pub(crate) product: String,
    pub(crate) base_url: String,
    pub(crate) from: Mailbox,
}

#[derive(Template)]
#[template(path = "invitation.txt")]
struct InvitationText<'a> {
    product: &'a str,
    base_url: &'a str,
    username: &'a str,
    password: &'a str,
    link: &'a str,
}

#[derive(Template)]
#[template(path = "invitation.html")]
struct InvitationHtml<'a> {
    product: &'a str,
    base_url: &'a str,
    username: &'a str,
    password: &'a str,
    link: &'a str,
}

#[derive(Template)]
#[template(path = "password_reset.txt")]
struct ResetText<'a> {
    product: &'a str,
    base_url: &'a str,
    username: &'a str,
    link: &'a str,
    valid_for: &'a str,
}

#[derive(Template)]
#[template(path = "password_reset.html")]
struct ResetHtml<'a> {
    product: &'a str,
    base_url: &'a str,
    username: &'a str,
    link: &'a str,
    valid_for: &'a str,
}

#[derive(Template)]
#[template(path = "test_message.txt")]
struct TestText<'a> {
    product: &'a str,
    base_url: &'a str,
}

#[derive(Template)]
#[template(path = "test_message.html")]
struct TestHtml<'a> {
    product: &'a str,
    base_url: &'a str,
}

fn render(template: &impl Template, name: &'static str) -> Result<String, Error> {
    template.render().map_err(|source| Error::Template {
        template: name,
        source,
    })
}

impl Branding {
    pub(crate) fn invitation(
        &self,
        to: &Mailbox,
        username: &str,
        default_password: &str,
        set_password_url: &str,
    ) -> Result<Composed, Error> {
        let link = self.link(set_password_url)?;
        let (product, base_url) = (self.product.as_str(), self.base_url.as_str());
        let text = render(
            &InvitationText {
                product,
                base_url,
                username,
                password: default_password,
                link: &link,
            },
            "invitation.txt",
        )?;
        let html = render(
            &InvitationHtml {
                product,
                base_url,
                username,
                password: default_password,
                link: &link,
            },
            "invitation.html",
        )?;
        let subject = format!("Your {product} account");
        self.build(to, &subject, text, html, vec![link])
    }

    pub(crate) fn password_reset(
        &self,
        to: &Mailbox,
        username: &str,
        reset_url: &str,
        valid_for: Duration,
    ) -> Result<Composed, Error> {
        let link = self.link(reset_url)?;
        let valid_for = human_duration(valid_for);
        let (product, base_url) = (self.product.as_str(), self.base_url.as_str());
        let text = render(
            &ResetText {
                product,
                base_url,
                username,
                link: &link,
                valid_for: &valid_for,
            },
            "password_reset.txt",
        )?;
        let html = render(
            &ResetHtml {
                product,
                base_url,
                username,
                link: &link,
                valid_for: &valid_for,
            },
            "password_reset.html",
        )?;
        let subject = format!("Reset your {product} password");
        self.build(to, &subject, text, html, vec![link])
    }

    pub(crate) fn test_message(&self, to: &Mailbox) -> Result<Composed, Error> {
        let (product, base_url) = (self.product.as_str(), self.base_url.as_str());
        let text = render(&TestText { product, base_url }, "test_message.txt")?;
        let html = render(&TestHtml { product, base_url }, "test_message.html")?;
        let subject = format!("{product} test message");
        self.build(to, &subject, text, html, Vec::new())
    }

    fn build(
        &self,
        to: &Mailbox,
        subject: &str,
        text: String,
        html: String,
        links: Vec<String>,
    ) -> Result<Composed, Error> {
        let message = Message::builder()
            .from(self.from.clone())
            .to(to.clone())
            .subject(subject)
            .multipart(MultiPart::alternative_plain_html(text, html))
            .map_err(|e| Error::Message {
                reason: e.to_string(),
            })?;
        Ok(Composed {
            envelope: message.envelope().clone(),
            bytes: message.formatted(),
            links,
        })
    }

    /// Absolute links are taken as given; `/path` is joined to the base URL. Anything else (other
    /// schemes, whitespace that could break the text part) is refused.
    fn link(&self, url: &str) -> Result<String, Error> {
        let invalid = |reason: &str| Error::InvalidUrl {
            url: url.to_owned(),
            reason: reason.to_owned(),
        };
        if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(invalid("contains whitespace or control characters"));
        }
        let absolute = if url.starts_with("http://") || url.starts_with("https://") {
            url.to_owned()
        } else if url.starts_with('/') && !url.starts_with("//") {
            format!("{}{url}", self.base_url.trim_end_matches('/'))
        } else {
            return Err(invalid(
                "must start with http://, https:// or / (relative to the base URL)",
            ));
        };
        if absolute
            .split_once("://")
            .is_none_or(|(_, rest)| rest.is_empty())
        {
            return Err(invalid("has no host"));
        }
        Ok(absolute)
    }
}

/// Parses a recipient at the edge, so a bad address is the caller's error, not a failed delivery.
pub(crate) fn recipient(address: &str) -> Result<Mailbox, Error> {
    address
        .trim()
        .parse()
        .map_err(|e: lettre::address::AddressError| Error::InvalidAddress {
            address: address.to_owned(),
            reason: e.to_string(),
        })
}

impl MessageKind {
    pub(crate) fn slug(self) -> &'static str {
        match self {
            MessageKind::Invitation => "invitation",
            MessageKind::PasswordReset => "password-reset",
            MessageKind::Test => "test",
        }
    }
}

/// "30 minutes", "1 hour 30 minutes", "2 days": rounded down to whole minutes, so a link is not
/// announced as valid for longer than it is.
pub(crate) fn human_duration(d: Duration) -> String {
    let minutes = (d.as_secs() / 60).max(1);
    let plural = |n: u64, unit: &str| {
        if n == 1 {
            format!("1 {unit}")
        } else {
            format!("{n} {unit}s")
        }
    };
    let (days, hours, mins) = (minutes / 1440, (minutes % 1440) / 60, minutes % 60);
    let mut parts = Vec::new();
    if days > 0 {
        parts.push(plural(days, "day"));
    }
    if hours > 0 {
        parts.push(plural(hours, "hour"));
    }
    if mins > 0 {
        parts.push(plural(mins, "minute"));
    }
    parts.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn branding() -> Branding {
        Branding {
            product: "Mask Detect".to_owned(),
            base_url: "https://masks.example.org/".to_owned(),
            from: "Mask Detect <no-reply@example.org>".parse().unwrap(),
        }
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(human_duration(Duration::from_secs(30 * 60)), "30 minutes");
        assert_eq!(human_duration(Duration::from_secs(3600)), "1 hour");
        assert_eq!(
            human_duration(Duration::from_secs(5400)),
            "1 hour 30 minutes"
        );
        assert_eq!(human_duration(Duration::from_secs(2 * 86400)), "2 days");
        assert_eq!(human_duration(Duration::from_secs(119)), "1 minute");
        assert_eq!(human_duration(Duration::ZERO), "1 minute");
    }

    #[test]
    fn links_absolute_or_relative_to_base() {
        let b = branding();
        assert_eq!(
            b.link("/invite?token=a&b=c").unwrap(),
            "https://masks.example.org/invite?token=a&b=c"
        );
        assert_eq!(b.link("http://x.test/y").unwrap(), "http://x.test/y");
        for bad in [
            "javascript:alert(1)",
            "//evil.test/x",
            "relative",
            "https://",
            "/a b",
        ] {
            assert!(
                matches!(b.link(bad), Err(Error::InvalidUrl { .. })),
                "{bad} accepted"
            );
        }
    }

    #[test]
    fn html_part_escapes_user_input() {
        let b = branding();
        let to = recipient("new@example.org").unwrap();
        let m = b
            .invitation(&to, "<script>x</script>", "pw", "/invite?t=1&u=2")
            .unwrap();
        let raw = String::from_utf8(m.bytes).unwrap();
        let (text, html) = raw.split_once("Content-Type: text/html").unwrap();
        assert!(
            text.contains("Hello <script>x</script>"),
            "text part is not HTML: {text}"
        );
        assert!(!html.contains("<script>"), "{html}");
        assert!(html.contains("&#60;script&#62;"), "{html}");
        assert!(raw.contains("multipart/alternative"));
        assert_eq!(m.links, vec!["https://masks.example.org/invite?t=1&u=2"]);
        assert_eq!(m.envelope.to().len(), 1);
    }

    #[test]
    fn bad_recipient_is_refused() {
        assert!(matches!(
            recipient("not-an-address"),
            Err(Error::InvalidAddress { .. })
        ));
        assert!(recipient(" a@b.example ").is_ok());
    }
}
