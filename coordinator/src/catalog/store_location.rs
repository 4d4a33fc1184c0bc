//! Where each worker's pack store keeps its packs (`workers.store_*`):
//! recorded from the worker's Hello, handed to the restore worker the
//! catalog grants (RestoreSpec.dump_store). Never a credential.

use pgsnapman_proto::v1;

use super::Catalog;
use crate::error::{ApiError, ApiResult};

/// Longest endpoint, region, bucket or prefix accepted (S3 keys are at most
/// 1024 bytes; a longer value is a broken worker).
const MAX_FIELD_BYTES: usize = 1024;

impl Catalog {
    /// Records `loc` as worker `id`'s store location; `None` (an older
    /// worker) leaves what was recorded.
    pub async fn note_store_location(
        &self,
        id: i64,
        loc: Option<&v1::StoreLocation>,
    ) -> ApiResult<()> {
        let Some(loc) = loc else {
            return Ok(());
        };
        if !matches!(loc.kind.as_str(), "local" | "s3") {
            return Err(ApiError::Invalid(format!(
                "store_location.kind {:?} is not \"local\" or \"s3\"",
                loc.kind.chars().take(40).collect::<String>()
            )));
        }
        for (name, v) in [
            ("endpoint", &loc.endpoint),
            ("region", &loc.region),
            ("bucket", &loc.bucket),
            ("prefix", &loc.prefix),
        ] {
            if v.len() > MAX_FIELD_BYTES {
                return Err(ApiError::Invalid(format!(
                    "store_location.{name} is {} bytes, more than {MAX_FIELD_BYTES}",
                    v.len()
                )));
            }
        }
        sqlx::query(
            "UPDATE workers SET store_kind = $2, store_endpoint = $3, store_region = $4, \
             store_bucket = $5, store_prefix = $6 WHERE id = $1",
        )
        .bind(id)
        .bind(&loc.kind)
        .bind(&loc.endpoint)
        .bind(&loc.region)
        .bind(&loc.bucket)
        .bind(&loc.prefix)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Worker `id`'s store location, `None` if it never said.
    pub async fn store_location(&self, id: i64) -> ApiResult<Option<v1::StoreLocation>> {
        let row: Option<(String, String, String, String, String)> = sqlx::query_as(
            "SELECT store_kind, store_endpoint, store_region, store_bucket, store_prefix \
             FROM workers WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row
            .filter(|r| !r.0.is_empty())
            .map(
                |(kind, endpoint, region, bucket, prefix)| v1::StoreLocation {
                    kind,
                    endpoint,
                    region,
                    bucket,
                    prefix,
                },
            ))
    }
}
