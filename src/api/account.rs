//! AccountService: who the caller is, for `ferry whoami` and any client that must
//! learn its organization id without being told.

use tonic::{Request, Response, Status};

use super::Call;
use crate::config::Config;
use crate::proto::{self, account_service_server::AccountService};

pub struct AccountApi {
    config: Config,
}

impl AccountApi {
    pub fn new(config: Config) -> AccountApi {
        AccountApi { config }
    }
}

#[tonic::async_trait]
impl AccountService for AccountApi {
    async fn who_am_i(
        &self,
        request: Request<proto::WhoAmIRequest>,
    ) -> Result<Response<proto::Caller>, Status> {
        Call::serve(request, |call, _| async move {
            let principal = call.principal;
            let organization = principal.organization;
            Ok(proto::Caller {
                import_row_limit: i64::try_from(organization.import_row_limit(&self.config))
                    .unwrap_or(i64::MAX),
                plan: organization.plan.as_str().to_string(),
                features: organization
                    .features
                    .iter()
                    .map(|f| f.as_str().to_string())
                    .collect(),
                key_id: principal.key_id,
                permissions: principal
                    .permissions
                    .iter()
                    .map(|p| p.as_str().to_string())
                    .collect(),
                organization_id: organization.id,
                organization_name: organization.name,
            })
        })
        .await
    }
}
