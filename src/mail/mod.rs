//! Outgoing e-mail, independent of what it is about: templates (en, es, pt) and a
//! transport, SMTP via lettre or the embedded default, a folder of `.eml` files.

pub mod relay;
pub mod templates;

use std::path::PathBuf;
use std::time::Duration;

use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use crate::config::{Config, MailTransport, SmtpTls};
pub use templates::{Kind, Rendered, Templates};

#[derive(Debug, thiserror::Error)]
pub enum MailError {
    /// Worth retrying later (connection refused, 4xx).
    #[error("mail transport failed, will retry: {0}")]
    Transient(String),
    /// Will not succeed (5xx, a bad address).
    #[error("mail was refused: {0}")]
    Permanent(String),
    #[error("invalid mail settings: {0}")]
    Config(String),
    /// The relay kept timing out; nothing was sent. Try again after this long.
    #[error("the mail relay keeps timing out; deliveries wait {0:?} for it")]
    RelayDown(Duration),
}

enum Transport {
    Drop(PathBuf),
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
}

/// One message to one recipient.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub from: Mailbox,
    pub to: Mailbox,
    pub message_id: String,
    pub rendered: Rendered,
}

pub struct Mailer {
    transport: Transport,
    /// Bounds one message's whole SMTP conversation.
    send_timeout: Duration,
    relay: relay::Breaker,
    pub system_sender: Mailbox,
    pub templates: Templates,
}

impl Mailer {
    pub fn from_config(config: &Config) -> Result<Mailer, MailError> {
        let mail = &config.mail;
        let transport = match mail.transport {
            MailTransport::Smtp => {
                let builder = match mail.smtp_tls {
                    SmtpTls::Plain => {
                        AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&mail.smtp_host)
                    }
                    SmtpTls::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(&mail.smtp_host)
                        .map_err(|e| MailError::Config(e.to_string()))?,
                    SmtpTls::Starttls => {
                        AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&mail.smtp_host)
                            .map_err(|e| MailError::Config(e.to_string()))?
                    }
                };
                let mut builder = builder
                    .port(mail.smtp_port)
                    .timeout(Some(Duration::from_secs(mail.smtp_connect_timeout_secs)));
                if !mail.smtp_username.is_empty() {
                    builder = builder.credentials(Credentials::new(
                        mail.smtp_username.clone(),
                        mail.smtp_password.clone(),
                    ));
                }
                Transport::Smtp(builder.build())
            }
            MailTransport::Drop => {
                let dir = if mail.drop_dir.is_empty() {
                    config.data_dir().join("mail")
                } else {
                    PathBuf::from(&mail.drop_dir)
                };
                std::fs::create_dir_all(&dir)
                    .map_err(|e| MailError::Config(format!("{}: {e}", dir.display())))?;
                Transport::Drop(dir)
            }
        };
        Ok(Mailer {
            transport,
            send_timeout: Duration::from_secs(mail.smtp_send_timeout_secs),
            relay: relay::Breaker::new(
                mail.smtp_breaker_timeouts,
                Duration::from_secs(mail.smtp_breaker_cooldown_secs),
            ),
            system_sender: mail
                .system_sender
                .parse()
                .map_err(|e| MailError::Config(format!("mail.system_sender: {e}")))?,
            templates: Templates::new().map_err(|e| MailError::Config(e.to_string()))?,
        })
    }

    /// Whether the SMTP relay answers (a connection and a NOOP); `None` when mail
    /// is dropped into a folder, which needs no probe.
    pub async fn probe(&self) -> Option<Result<(), String>> {
        match &self.transport {
            Transport::Drop(_) => None,
            Transport::Smtp(smtp) => {
                let answer = match tokio::time::timeout(self.send_timeout, smtp.test_connection()).await {
                    Ok(Ok(true)) => Ok(()),
                    Ok(Ok(false)) => Err("the relay did not answer a NOOP".into()),
                    Ok(Err(err)) => Err(err.to_string()),
                    Err(_) => Err(format!("the relay did not answer within {:?}", self.send_timeout)),
                };
                if answer.is_ok() {
                    self.relay.answered();
                }
                Some(answer)
            }
        }
    }

    /// Reports the relay's breaker on this gauge (`ferry_mail_relay_breaker_open`).
    pub fn with_breaker_gauge(mut self, gauge: prometheus_client::metrics::gauge::Gauge) -> Mailer {
        self.relay.report_on(gauge);
        self
    }

    /// Whether mail goes to an SMTP relay (the readiness probe watches it).
    pub fn uses_smtp(&self) -> bool {
        matches!(self.transport, Transport::Smtp(_))
    }

    /// A fresh Message-ID, recorded before sending so a retry can tell what went out.
    pub fn new_message_id() -> String {
        format!("<{}@ferry>", uuid::Uuid::now_v7())
    }

    pub async fn send(&self, outgoing: &Outgoing) -> Result<(), MailError> {
        let message = Message::builder()
            .from(outgoing.from.clone())
            .to(outgoing.to.clone())
            .subject(&outgoing.rendered.subject)
            .message_id(Some(outgoing.message_id.clone()))
            .multipart(MultiPart::alternative_plain_html(
                outgoing.rendered.text.clone(),
                outgoing.rendered.html.clone(),
            ))
            .map_err(|e| MailError::Permanent(e.to_string()))?;
        match &self.transport {
            Transport::Drop(dir) => {
                let name: String = outgoing
                    .message_id
                    .chars()
                    .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
                    .collect();
                tokio::fs::write(dir.join(format!("{name}.eml")), message.formatted())
                    .await
                    .map_err(|e| MailError::Transient(e.to_string()))
            }
            Transport::Smtp(smtp) => self.converse(smtp, message).await,
        }
    }

    /// One message's conversation with the relay, bounded as a whole and fed to
    /// the breaker: a timeout, or a connection refused or dropped, counts toward
    /// it; any SMTP answer, even a refusal of the message, shows the relay is
    /// there.
    async fn converse(
        &self,
        smtp: &AsyncSmtpTransport<Tokio1Executor>,
        message: Message,
    ) -> Result<(), MailError> {
        if let Some(wait) = self.relay.admit() {
            return Err(MailError::RelayDown(wait));
        }
        match tokio::time::timeout(self.send_timeout, smtp.send(message)).await {
            Ok(Ok(_)) => {
                self.relay.answered();
                Ok(())
            }
            Ok(Err(e)) if e.is_permanent() || e.is_transient() => {
                // A 5xx or 4xx: the relay answered.
                self.relay.answered();
                if e.is_permanent() {
                    Err(MailError::Permanent(e.to_string()))
                } else {
                    Err(MailError::Transient(e.to_string()))
                }
            }
            // No answer at all: a timeout, a refused or dropped connection.
            Ok(Err(e)) => Err(self.timed_out(e.to_string())),
            Err(_) => Err(self.timed_out(format!(
                "the mail relay did not finish the conversation within {} s",
                self.send_timeout.as_secs()
            ))),
        }
    }

    /// A conversation the relay never answered: a transient failure, or, once
    /// the breaker opens, a wait that spends no attempt.
    fn timed_out(&self, message: String) -> MailError {
        match self.relay.timed_out() {
            Some(cooldown) => MailError::RelayDown(cooldown),
            None => MailError::Transient(message),
        }
    }
}
