//! S3 (or any S3-compatible store): multipart uploads streamed from disk in 8 MiB
//! parts, presigned GET URLs.

use std::path::Path;
use std::time::Duration;

use aws_sdk_s3::Client;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::config::{Credentials, Region};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart, ServerSideEncryption};
use tokio::io::AsyncReadExt;

use super::{Download, StorageError};
use crate::config::StorageConfig;

/// Part size of multipart uploads; also the most an upload holds in memory.
const PART_SIZE: usize = 8 * 1024 * 1024;

/// The longest [`S3Store::explain`] waits for its probe.
const PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

#[derive(Clone)]
pub struct S3Store {
    client: Client,
    bucket: String,
    prefix: String,
    /// `storage.s3_sse`, asked for on every object written (`None`: the bucket's
    /// default encryption).
    sse: Option<ServerSideEncryption>,
    /// `storage.s3_kms_key_id` (with `aws:kms`).
    kms_key_id: Option<String>,
    /// The longest a download waits for its next chunk (`storage.s3_read_timeout_secs`).
    chunk_timeout: Duration,
}

fn s3_error(err: impl std::fmt::Display) -> StorageError {
    StorageError::S3(err.to_string())
}

/// S3 error codes no retry fixes, with the settings an operator should look at.
const PERMANENT: &[(&str, &str)] = &[
    ("NoSuchBucket", "the bucket does not exist (storage.s3_bucket)"),
    (
        "InvalidBucketName",
        "the bucket name is not valid (storage.s3_bucket)",
    ),
    (
        "AccessDenied",
        "access is denied for these credentials (storage.s3_access_key_id, the bucket policy)",
    ),
    (
        "AllAccessDisabled",
        "all access to the bucket is disabled (storage.s3_bucket)",
    ),
    ("AccountProblem", "the account behind the credentials is blocked"),
    (
        "Forbidden",
        "the store refuses these credentials: a wrong secret (storage.s3_secret_access_key), an unknown key (storage.s3_access_key_id) or a bucket policy that denies access",
    ),
    (
        "InvalidAccessKeyId",
        "the access key is unknown (storage.s3_access_key_id)",
    ),
    (
        "SignatureDoesNotMatch",
        "the secret key does not match (storage.s3_secret_access_key)",
    ),
    ("InvalidToken", "the session token is not valid (credentials)"),
    ("ExpiredToken", "the credentials have expired"),
    (
        "PermanentRedirect",
        "the bucket is in another region (storage.s3_region, storage.s3_endpoint)",
    ),
    (
        "AuthorizationHeaderMalformed",
        "the bucket is in another region (storage.s3_region)",
    ),
];

/// An SDK error, told apart: a refusal that only a settings change can fix becomes
/// [`StorageError::Misconfigured`] naming the setting; anything else (timeouts,
/// 5xx, a connection reset) stays a transient [`StorageError::S3`].
fn classify<E>(bucket: &str, err: SdkError<E, HttpResponse>) -> StorageError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    if matches!(err, SdkError::TimeoutError(_)) {
        return StorageError::TimedOut(aws_sdk_s3::error::DisplayErrorContext(err).to_string());
    }
    let status = err.raw_response().map(|response| response.status().as_u16());
    // HEAD answers carry no body, hence no code: the status says it.
    let code = match (err.code(), status) {
        // HeadBucket's 404 (the only HEAD ferry sends) is a missing bucket.
        (None | Some("NotFound"), Some(404)) => "NoSuchBucket".to_string(),
        (Some(code), _) => code.to_string(),
        // A HEAD's 403 cannot say whether the secret is wrong or access is denied.
        (None, Some(403)) => "Forbidden".to_string(),
        (None, Some(301)) => "PermanentRedirect".to_string(),
        (None, _) => String::new(),
    };
    match PERMANENT.iter().find(|(known, _)| *known == code) {
        Some((code, hint)) => StorageError::Misconfigured(format!("S3 bucket `{bucket}`: {hint} ({code})")),
        None => s3_error(aws_sdk_s3::error::DisplayErrorContext(err)),
    }
}

impl S3Store {
    pub async fn from_config(config: &StorageConfig) -> Result<S3Store, StorageError> {
        if config.s3_bucket.is_empty() {
            return Err(StorageError::Config(
                "storage.s3_bucket is required with storage.backend = s3".into(),
            ));
        }
        // rustls with ring: no aws-lc C build.
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
                aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
            ))
            .build_https();
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest()).http_client(http);
        if !config.s3_region.is_empty() {
            loader = loader.region(Region::new(config.s3_region.clone()));
        }
        if !config.s3_endpoint.is_empty() {
            loader = loader.endpoint_url(&config.s3_endpoint);
        }
        if !config.s3_access_key_id.is_empty() {
            loader = loader.credentials_provider(Credentials::new(
                &config.s3_access_key_id,
                &config.s3_secret_access_key,
                None,
                None,
                "ferry-settings",
            ));
        }
        let shared = loader.load().await;
        // Every request is bounded: a stalled store answers STORAGE_UNAVAILABLE
        // in about `s3_read_timeout_secs`, and jobs retry it with backoff.
        let timeouts = aws_sdk_s3::config::timeout::TimeoutConfig::builder()
            .connect_timeout(Duration::from_millis(config.s3_connect_timeout_millis))
            .read_timeout(Duration::from_secs(config.s3_read_timeout_secs))
            .operation_timeout(Duration::from_secs(config.s3_operation_timeout_secs))
            .build();
        let s3_config = aws_sdk_s3::config::Builder::from(&shared)
            .force_path_style(config.s3_force_path_style)
            .timeout_config(timeouts)
            .build();
        Ok(S3Store {
            client: Client::from_conf(s3_config),
            bucket: config.s3_bucket.clone(),
            prefix: config.s3_prefix.trim_matches('/').to_string(),
            sse: (!config.s3_sse.is_empty()).then(|| ServerSideEncryption::from(config.s3_sse.as_str())),
            kms_key_id: (!config.s3_kms_key_id.is_empty()).then(|| config.s3_kms_key_id.clone()),
            chunk_timeout: Duration::from_secs(config.s3_read_timeout_secs),
        })
    }

    fn object_key(&self, key: &str) -> String {
        if self.prefix.is_empty() {
            key.to_string()
        } else {
            format!("{}/{key}", self.prefix)
        }
    }

    /// The bucket answers, and a small object can be written and removed under the
    /// prefix.
    pub async fn check_writable(&self) -> Result<(), StorageError> {
        self.client
            .head_bucket()
            .bucket(&self.bucket)
            .send()
            .await
            .map_err(|e| classify(&self.bucket, e))?;
        let probe = self.object_key(&format!(".ferry-probe/{}", uuid::Uuid::now_v7()));
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(&probe)
            .set_server_side_encryption(self.sse.clone())
            .set_ssekms_key_id(self.kms_key_id.clone())
            .body(ByteStream::from_static(b"ferry start-up check"))
            .send()
            .await
            .map_err(|e| classify(&self.bucket, e))?;
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(&probe)
            .send()
            .await
            .map_err(|e| classify(&self.bucket, e))?;
        Ok(())
    }

    /// The bucket answers a bodiless HEAD.
    pub async fn probe(&self) -> Result<(), StorageError> {
        self.client
            .head_bucket()
            .bucket(&self.bucket)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| classify(&self.bucket, e))
    }

    pub async fn put_file(&self, key: &str, path: &Path, content_type: &str) -> Result<u64, StorageError> {
        match self.write_file(key, path, content_type).await {
            // A store that does not answer is not refusing: no probe to wait for.
            Err(err @ StorageError::S3(_)) if !err.is_timeout() => Err(self.explain(err).await),
            other => other,
        }
    }

    /// A store that refuses a request with a body may answer early and close the
    /// connection while the body is still being sent; the client then sees only a
    /// reset, which looks transient. A bodiless HEAD of the bucket tells a refusal
    /// (wrong secret, missing bucket) from a real hiccup, so a store that cannot work
    /// fails the job at once instead of being retried. The probe is bounded: a store
    /// that does not answer keeps the original error.
    async fn explain(&self, err: StorageError) -> StorageError {
        let probe = self.client.head_bucket().bucket(&self.bucket).send();
        match tokio::time::timeout(PROBE_TIMEOUT, probe).await {
            Ok(Err(refused)) => match classify(&self.bucket, refused) {
                permanent @ StorageError::Misconfigured(_) => permanent,
                _ => err,
            },
            _ => err,
        }
    }

    async fn write_file(&self, key: &str, path: &Path, content_type: &str) -> Result<u64, StorageError> {
        let size = tokio::fs::metadata(path).await?.len();
        let object = self.object_key(key);
        if size as usize <= PART_SIZE {
            let body = ByteStream::from_path(path).await.map_err(s3_error)?;
            self.client
                .put_object()
                .bucket(&self.bucket)
                .key(&object)
                .content_type(content_type)
                .set_server_side_encryption(self.sse.clone())
                .set_ssekms_key_id(self.kms_key_id.clone())
                .body(body)
                .send()
                .await
                .map_err(|e| classify(&self.bucket, e))?;
            return Ok(size);
        }
        let upload = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(&object)
            .content_type(content_type)
            .set_server_side_encryption(self.sse.clone())
            .set_ssekms_key_id(self.kms_key_id.clone())
            .send()
            .await
            .map_err(|e| classify(&self.bucket, e))?;
        let upload_id = upload.upload_id().unwrap_or_default().to_string();
        match self.upload_parts(&object, &upload_id, path).await {
            Ok(()) => Ok(size),
            Err(err) => {
                // Leave no half-uploaded parts behind (they are billed).
                let _ = self
                    .client
                    .abort_multipart_upload()
                    .bucket(&self.bucket)
                    .key(&object)
                    .upload_id(&upload_id)
                    .send()
                    .await;
                Err(err)
            }
        }
    }

    async fn upload_parts(&self, object: &str, upload_id: &str, path: &Path) -> Result<(), StorageError> {
        let mut file = tokio::fs::File::open(path).await?;
        let mut parts = Vec::new();
        for number in 1.. {
            let mut chunk = Vec::with_capacity(PART_SIZE);
            (&mut file).take(PART_SIZE as u64).read_to_end(&mut chunk).await?;
            if chunk.is_empty() {
                break;
            }
            let part = self
                .client
                .upload_part()
                .bucket(&self.bucket)
                .key(object)
                .upload_id(upload_id)
                .part_number(number)
                .body(ByteStream::from(chunk))
                .send()
                .await
                .map_err(|e| classify(&self.bucket, e))?;
            parts.push(
                CompletedPart::builder()
                    .set_e_tag(part.e_tag().map(str::to_string))
                    .part_number(number)
                    .build(),
            );
        }
        self.client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(object)
            .upload_id(upload_id)
            .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(parts)).build())
            .send()
            .await
            .map_err(|e| classify(&self.bucket, e))?;
        Ok(())
    }

    /// Calls `each` with the key (without the prefix) and size of every object
    /// under the prefix.
    pub async fn each_object(&self, each: &mut impl FnMut(&str, u64)) -> Result<(), StorageError> {
        let prefix = (!self.prefix.is_empty()).then(|| format!("{}/", self.prefix));
        let mut token = None;
        loop {
            let page = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .set_prefix(prefix.clone())
                .set_continuation_token(token.take())
                .send()
                .await
                .map_err(|e| classify(&self.bucket, e))?;
            for object in page.contents() {
                let Some(key) = object.key() else { continue };
                let key = prefix.as_deref().and_then(|p| key.strip_prefix(p)).unwrap_or(key);
                each(key, object.size().unwrap_or(0).max(0) as u64);
            }
            token = page.next_continuation_token().map(str::to_string);
            if page.is_truncated() != Some(true) || token.is_none() {
                return Ok(());
            }
        }
    }

    /// Aborts multipart uploads under the prefix begun more than `age` ago (a
    /// writer killed mid-upload never completes or aborts its own).
    pub async fn remove_abandoned(&self, age: Duration) -> Result<usize, StorageError> {
        let cutoff = std::time::SystemTime::now()
            .checked_sub(age)
            .unwrap_or(std::time::UNIX_EPOCH);
        let cutoff = aws_sdk_s3::primitives::DateTime::from(cutoff);
        let mut removed = 0;
        let (mut key_marker, mut id_marker) = (None, None);
        loop {
            let page = self
                .client
                .list_multipart_uploads()
                .bucket(&self.bucket)
                .set_prefix((!self.prefix.is_empty()).then(|| format!("{}/", self.prefix)))
                .set_key_marker(key_marker.take())
                .set_upload_id_marker(id_marker.take())
                .send()
                .await
                .map_err(|e| classify(&self.bucket, e))?;
            for upload in page.uploads() {
                let old = upload.initiated().is_some_and(|at| at.secs() < cutoff.secs());
                let (Some(key), Some(id)) = (upload.key(), upload.upload_id()) else {
                    continue;
                };
                if old {
                    self.client
                        .abort_multipart_upload()
                        .bucket(&self.bucket)
                        .key(key)
                        .upload_id(id)
                        .send()
                        .await
                        .map_err(|e| classify(&self.bucket, e))?;
                    removed += 1;
                }
            }
            if page.is_truncated() != Some(true) {
                return Ok(removed);
            }
            key_marker = page.next_key_marker().map(str::to_string);
            id_marker = page.next_upload_id_marker().map(str::to_string);
            if key_marker.is_none() {
                return Ok(removed);
            }
        }
    }

    pub async fn fetch_to_file(&self, key: &str, path: &Path) -> Result<u64, StorageError> {
        use tokio::io::AsyncWriteExt;
        let object = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(self.object_key(key))
            .send()
            .await
            .map_err(|e| classify(&self.bucket, e))?;
        let mut body = object.body;
        let mut file = tokio::fs::File::create(path).await?;
        let mut size = 0u64;
        loop {
            let next = tokio::time::timeout(self.chunk_timeout, body.next())
                .await
                .map_err(|_| {
                    StorageError::TimedOut(format!(
                        "the download stalled: no data for {} s (storage.s3_read_timeout_secs)",
                        self.chunk_timeout.as_secs()
                    ))
                })?;
            let Some(chunk) = next else { break };
            let chunk = chunk.map_err(|e| s3_error(aws_sdk_s3::error::DisplayErrorContext(e)))?;
            size += chunk.len() as u64;
            file.write_all(&chunk).await?;
        }
        file.flush().await?;
        Ok(size)
    }

    pub async fn delete(&self, key: &str) -> Result<(), StorageError> {
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(self.object_key(key))
            .send()
            .await
            .map_err(|e| classify(&self.bucket, e))?;
        Ok(())
    }

    pub async fn download_url(&self, key: &str, download: &Download<'_>) -> Result<String, StorageError> {
        let presign = PresigningConfig::expires_in(download.ttl).map_err(s3_error)?;
        let request = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(self.object_key(key))
            .response_content_disposition(format!("attachment; filename=\"{}\"", download.file_name))
            .response_content_type(download.content_type)
            .presigned(presign)
            .await
            .map_err(|e| classify(&self.bucket, e))?;
        Ok(request.uri().to_string())
    }
}
