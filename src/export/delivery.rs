//! E-mail delivery rules of an export, checked before the job is queued: recipients
//! (valid, deduplicated case-insensitively, at most 26), locale, and the sender (an
//! address on a verified domain, or one of the organization's senders, not both).

use lettre::Address;

use super::spec::Delivery;
use crate::db::{Conn, DbError, email};
use crate::mail::templates::LOCALES;
use crate::orgs::{Feature, Organization};

pub const MAX_RECIPIENTS: usize = 26;

#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error("invalid delivery")]
    Invalid(Vec<(String, String)>),
    #[error("{count} recipients after removing duplicates; at most {MAX_RECIPIENTS} are allowed")]
    TooManyRecipients { count: usize },
    #[error("set from_email or from_sender_id, not both")]
    SenderConflict,
    #[error("sender {0} is not one of the organization's senders")]
    SenderNotFound(String),
    #[error("the domain of {0} is not a verified domain of the organization")]
    DomainNotVerified(String),
    #[error("e-mail delivery needs the organization feature `global_sender_email`")]
    FeatureDisabled,
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<diesel::result::Error> for DeliveryError {
    fn from(err: diesel::result::Error) -> Self {
        DeliveryError::Db(DbError::Query(err))
    }
}

/// Recipients checked and deduplicated (first spelling kept), and the locale.
pub fn normalize(delivery: &Delivery) -> Result<Delivery, DeliveryError> {
    let mut violations = Vec::new();
    let mut recipients: Vec<String> = Vec::new();
    for (i, raw) in delivery.recipient_emails.iter().enumerate() {
        let address = raw.trim();
        if address.parse::<Address>().is_err() {
            violations.push((
                format!("delivery.recipient_emails[{i}]"),
                format!("`{raw}` is not an e-mail address"),
            ));
        } else if !recipients.iter().any(|r| r.eq_ignore_ascii_case(address)) {
            recipients.push(address.to_string());
        }
    }
    if delivery.recipient_emails.is_empty() {
        violations.push((
            "delivery.recipient_emails".into(),
            "at least one recipient is required".into(),
        ));
    }
    let locale = match delivery.email_locale.trim().to_ascii_lowercase().as_str() {
        "" => "en".to_string(),
        l if LOCALES.contains(&l) => l.to_string(),
        other => {
            violations.push((
                "delivery.email_locale".into(),
                format!("`{other}` is not en, es or pt"),
            ));
            String::new()
        }
    };
    if !violations.is_empty() {
        return Err(DeliveryError::Invalid(violations));
    }
    if recipients.len() > MAX_RECIPIENTS {
        return Err(DeliveryError::TooManyRecipients {
            count: recipients.len(),
        });
    }
    if !delivery.from_email.trim().is_empty() && !delivery.from_sender_id.trim().is_empty() {
        return Err(DeliveryError::SenderConflict);
    }
    Ok(Delivery {
        recipient_emails: recipients,
        email_locale: locale,
        from_email: delivery.from_email.trim().to_string(),
        from_sender_id: delivery.from_sender_id.trim().to_string(),
        from_mailbox: String::new(),
    })
}

/// The full check: feature, recipients, locale, sender; resolves the From mailbox
/// (empty: the system sender).
pub async fn check(
    conn: &mut Conn,
    org: &Organization,
    delivery: &Delivery,
) -> Result<Delivery, DeliveryError> {
    if !org.has(Feature::GlobalSenderEmail) {
        return Err(DeliveryError::FeatureDisabled);
    }
    let mut checked = normalize(delivery)?;
    if !checked.from_email.is_empty() {
        let address: Address = checked.from_email.parse().map_err(|_| {
            DeliveryError::Invalid(vec![(
                "delivery.from_email".into(),
                format!("`{}` is not an e-mail address", checked.from_email),
            )])
        })?;
        let domain = address.domain().to_ascii_lowercase();
        let verified = email::find_domain(conn, &org.id, &domain)
            .await?
            .is_some_and(|d| d.verified);
        if !verified {
            return Err(DeliveryError::DomainNotVerified(checked.from_email.clone()));
        }
        checked.from_mailbox = checked.from_email.clone();
    } else if !checked.from_sender_id.is_empty() {
        let sender = email::find_sender(conn, &org.id, &checked.from_sender_id)
            .await?
            .ok_or_else(|| DeliveryError::SenderNotFound(checked.from_sender_id.clone()))?;
        checked.from_mailbox = if sender.display_name.is_empty() {
            sender.email
        } else {
            format!("{} <{}>", sender.display_name, sender.email)
        };
    }
    Ok(checked)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivery(recipients: &[String]) -> Delivery {
        Delivery {
            recipient_emails: recipients.to_vec(),
            ..Default::default()
        }
    }

    #[test]
    fn twenty_seven_addresses_that_fold_to_twenty_six_are_accepted() {
        let mut recipients: Vec<String> = (0..26).map(|i| format!("user{i}@example.com")).collect();
        recipients.push("USER0@Example.com".into());
        let checked = normalize(&delivery(&recipients)).unwrap();
        assert_eq!(checked.recipient_emails.len(), 26);
        assert_eq!(checked.email_locale, "en");
    }

    #[test]
    fn twenty_seven_distinct_addresses_are_too_many() {
        let recipients: Vec<String> = (0..27).map(|i| format!("user{i}@example.com")).collect();
        assert!(matches!(
            normalize(&delivery(&recipients)),
            Err(DeliveryError::TooManyRecipients { count: 27 })
        ));
    }

    #[test]
    fn bad_addresses_and_locales_are_named() {
        let mut d = delivery(&["ok@example.com".into(), "not an address".into()]);
        d.email_locale = "fr".into();
        let Err(DeliveryError::Invalid(violations)) = normalize(&d) else {
            panic!()
        };
        let fields: Vec<&str> = violations.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(fields, ["delivery.recipient_emails[1]", "delivery.email_locale"]);
    }

    #[test]
    fn both_senders_conflict() {
        let mut d = delivery(&["a@example.com".into()]);
        d.from_email = "x@example.com".into();
        d.from_sender_id = "s".into();
        assert!(matches!(normalize(&d), Err(DeliveryError::SenderConflict)));
    }
}
