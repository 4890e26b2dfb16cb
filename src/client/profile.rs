//! The client's profile file, `~/.config/ferry/config.toml` (or
//! `$XDG_CONFIG_HOME/ferry/config.toml`): named servers and keys, so a person types
//! `ferry import list` instead of a URL and a key each time.
//!
//! ```toml
//! [profiles.default]
//! server = "http://127.0.0.1:50051"
//! api_key = "fry_…"
//! org = "…"            # optional
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::session::{Session, Target, normalise_server};
use super::{ClientArgs, ClientError, Exit};

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub org: Option<String>,
    /// `--ca-cert`, `--client-cert`, `--client-key` (paths).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_cert: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_cert: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_key: Option<String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProfileFile {
    #[serde(default)]
    profiles: BTreeMap<String, Profile>,
}

/// The file's path; `None` when the system names no home directory.
pub fn path() -> Option<PathBuf> {
    directories::ProjectDirs::from("", "", "ferry").map(|dirs| dirs.config_dir().join("config.toml"))
}

fn read_file() -> Result<(Option<PathBuf>, ProfileFile), ClientError> {
    let Some(path) = path() else {
        return Ok((None, ProfileFile::default()));
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            return Ok((Some(path), ProfileFile::default()));
        }
        Err(err) => return Err(ClientError::io(format!("cannot read {}", path.display()))(err)),
    };
    let file = toml::from_str(&text).map_err(|err| {
        ClientError::Input(format!("{} is not a valid profile file: {err}", path.display()))
    })?;
    Ok((Some(path), file))
}

/// The named profile; `None` when there is no file or no such profile (flags and
/// the environment may still say everything).
pub fn load(name: &str) -> Result<Option<Profile>, ClientError> {
    let (_, mut file) = read_file()?;
    Ok(file.profiles.remove(name))
}

/// `ferry login`: checks the server and key with WhoAmI, then saves them under
/// the profile's name (other profiles are kept), mode 0600.
pub async fn login(args: &ClientArgs) -> Result<Exit, ClientError> {
    let (path, mut file) = read_file()?;
    let path =
        path.ok_or_else(|| ClientError::Input("no home directory to keep the profile file in".into()))?;
    let saved = file.profiles.get(&args.profile).cloned();
    let target = Target::resolve(args, saved)?;
    let session = Session::connect(target.clone(), args.output).await?;
    let caller = session.whoami().await?;
    file.profiles.insert(
        args.profile.clone(),
        Profile {
            server: Some(normalise_server(&target.server)?),
            api_key: target.api_key,
            org: target.org,
            ca_cert: target.tls.ca_cert.as_ref().map(|p| p.display().to_string()),
            client_cert: target
                .tls
                .identity
                .as_ref()
                .map(|(cert, _)| cert.display().to_string()),
            client_key: target
                .tls
                .identity
                .as_ref()
                .map(|(_, key)| key.display().to_string()),
        },
    );
    if let Some(folder) = path.parent() {
        std::fs::create_dir_all(folder)
            .map_err(ClientError::io(format!("cannot create {}", folder.display())))?;
    }
    let text = toml::to_string(&file).map_err(|err| ClientError::Input(err.to_string()))?;
    crate::private_file::write(&path, &text)
        .map_err(ClientError::io(format!("cannot write {}", path.display())))?;
    eprintln!(
        "Logged in to {} as key {} of {} ({}); saved as profile `{}` in {}",
        session.server,
        caller.key_id,
        caller.organization_name,
        caller.organization_id,
        args.profile,
        path.display()
    );
    session.output.caller(&caller);
    Ok(Exit::Ok)
}
