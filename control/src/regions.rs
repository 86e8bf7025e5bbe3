//! The regions a scan or a sweep works in: the configured list, or every
//! region enabled in the account (`DescribeRegions` in the home region).

use crate::calls::ApiCalls;
use crate::ctx::Ctx;
use crate::error::ApiError;

/// Opt-in status of a region the account has not enabled.
const NOT_OPTED_IN: &str = "not-opted-in";

/// The regions to work in, sorted.
///
/// # Errors
/// [`ApiError`] when `DescribeRegions` fails.
pub async fn regions(ctx: &Ctx, calls: &ApiCalls) -> Result<Vec<String>, ApiError> {
    if let Some(regions) = &ctx.config().regions {
        let mut regions = regions.clone();
        regions.sort();
        regions.dedup();
        return Ok(regions);
    }
    let home = ctx.home_region().unwrap_or("us-east-1");
    let answer = ctx
        .ec2(home, calls)
        .describe_regions()
        .all_regions(false)
        .send()
        .await
        .map_err(|err| ApiError::new(format!("DescribeRegions in {home}"), &err))?;
    // Without AllRegions, AWS lists only enabled regions; the status is
    // checked as well, for endpoints that list them all.
    let mut regions: Vec<String> = answer
        .regions()
        .iter()
        .filter(|region| region.opt_in_status() != Some(NOT_OPTED_IN))
        .filter_map(|region| region.region_name().map(str::to_string))
        .collect();
    regions.sort();
    regions.dedup();
    Ok(regions)
}
