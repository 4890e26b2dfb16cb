//! The hub's static files, compiled into the binary and served under names that
//! carry their content's hash (`hub.3f2a….css`): a browser keeps them for a year
//! and a new build's files have new names, so nobody runs yesterday's script.

use std::sync::LazyLock;

use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

/// One embedded file and the name it is served under.
pub struct Asset {
    pub name: String,
    pub content_type: &'static str,
    pub bytes: &'static [u8],
}

fn asset(stem: &str, extension: &str, content_type: &'static str, bytes: &'static [u8]) -> Asset {
    let hash = hex::encode(&Sha256::digest(bytes)[..6]);
    Asset {
        name: format!("{stem}.{hash}.{extension}"),
        content_type,
        bytes,
    }
}

pub static CSS: LazyLock<Asset> = LazyLock::new(|| {
    asset(
        "hub",
        "css",
        "text/css; charset=utf-8",
        include_bytes!("static/hub.css"),
    )
});
pub static SCRIPT: LazyLock<Asset> = LazyLock::new(|| {
    asset(
        "hub",
        "js",
        "text/javascript; charset=utf-8",
        include_bytes!("static/hub.js"),
    )
});

/// The path a page links an asset by.
pub fn href(asset: &Asset) -> String {
    format!("/hub/static/{}", asset.name)
}

/// `GET /hub/static/{name}`: only the current build's names exist.
pub async fn serve(Path(name): Path<String>) -> Response {
    let Some(asset) = [&*CSS, &*SCRIPT].into_iter().find(|a| a.name == name) else {
        return (StatusCode::NOT_FOUND, "no such file\n").into_response();
    };
    (
        [
            (header::CONTENT_TYPE, asset.content_type),
            (header::CACHE_CONTROL, "public, max-age=31536000, immutable"),
        ],
        asset.bytes,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn asset_names_carry_their_content_hash() {
        assert!(CSS.name.starts_with("hub.") && CSS.name.ends_with(".css"));
        assert_eq!(CSS.name.len(), "hub..css".len() + 12);
        assert_ne!(CSS.name, SCRIPT.name);
    }
}
