//! One certificate check of one replica, request by request, against a
//! mocked API server: a decision that writes when it should not (or the
//! other way round) fails here, not only in e2e.

use super::fixtures::*;
use super::sans;

#[tokio::test]
async fn an_empty_cluster_gets_a_ca_a_serving_certificate_and_both_bundles() {
    let (mut replica, mut api) = a_replica_checks();
    api.serves_configurations_without_a_bundle().await;
    api.has_no_secret().await;

    let created = api.takes_a_new_secret().await;
    assert_eq!((created.cas.len(), created.generation), (1, 1));
    let leaf = created.leaf.clone().expect("a serving certificate");
    assert_eq!(leaf.issuer, created.cas[0].name);
    assert_eq!(leaf.sans, sans("sessionguard-webhook", "sg", &[]));
    api.takes_the_bundle_on_both(&created).await;

    api.sees_the_check_end(&mut replica).await;
    assert!(replica.serves(&leaf));
    assert_eq!(replica.errors(), 0);
    // The first path token, published at once and accepted.
    let tok = created.path_token.clone().expect("a path token");
    assert_eq!(created.accepted_tokens(), std::slice::from_ref(&tok));
    assert!(replica.accepts(&tok));
    assert!(!replica.accepts("0000000000000000000000000000000000000000000000000000000000000000"));
}

#[tokio::test]
async fn a_settled_cluster_sees_no_write() {
    let settled = secret_written(days(1));
    let (mut replica, mut api) = a_replica_checks();
    api.serves_configurations_publishing(&settled).await;
    api.serves_secret(&settled, SECRET_RV).await;

    api.sees_the_check_end(&mut replica).await;
    assert!(replica.serves(settled.leaf.as_ref().unwrap()));
}

#[tokio::test]
async fn a_serving_certificate_near_its_end_is_renewed_and_the_bundle_left_alone() {
    let old = secret_written(days(61));
    let old_leaf = old.leaf.clone().unwrap();
    let (mut replica, mut api) = a_replica_checks();
    api.serves_configurations_publishing(&old).await;
    api.serves_secret(&old, SECRET_RV).await;

    let renewed = api.takes_the_secret_written_over(SECRET_RV).await;
    let leaf = renewed.leaf.clone().unwrap();
    assert_ne!(leaf.cert_pem, old_leaf.cert_pem);
    assert!(leaf.not_after > old_leaf.not_after);
    assert_eq!(renewed.cas, old.cas, "signed by the same CA");
    assert_eq!(
        renewed.generation, old.generation,
        "the bundle did not change"
    );

    // No configuration write: both already trust the CA, and the new
    // serving certificate's path token is not published yet...
    assert_eq!(
        renewed.tokens.len(),
        2,
        "a new token with the new certificate"
    );
    assert_eq!(renewed.path_token, old.path_token);
    api.sees_the_check_end(&mut replica).await;
    assert!(replica.serves(&leaf));
    // ...but accepted already, beside the published one.
    for t in renewed.accepted_tokens() {
        assert!(replica.accepts(&t));
    }
}

#[tokio::test]
async fn a_token_every_replica_had_time_to_read_goes_into_both_paths() {
    // Renewed a minute ago (the chart's check interval is 30 s: two have passed).
    let mut renewed = secret_written(days(1));
    let mut next = renewed.tokens[0].clone();
    next.value = "f".repeat(64);
    next.created_at = jiff::Timestamp::now() - jiff::SignedDuration::from_mins(1);
    renewed.tokens.push(next);
    let (mut replica, mut api) = a_replica_checks();
    api.serves_configurations_publishing(&renewed).await;
    api.serves_secret(&renewed, SECRET_RV).await;

    let published = api.takes_the_secret_written_over(SECRET_RV).await;
    assert_eq!(
        published.path_token.as_deref(),
        Some("f".repeat(64).as_str())
    );
    assert_eq!(published.generation, renewed.generation + 1);
    api.takes_the_bundle_on_both(&published).await;
    api.sees_the_check_end(&mut replica).await;
    assert!(replica.accepts(&"f".repeat(64)));
    assert!(
        replica.accepts(renewed.path_token.as_deref().unwrap()),
        "the previous one too"
    );
}

#[tokio::test]
async fn a_secret_behind_the_published_bundle_is_published_again() {
    let backup = secret_written(days(2));
    let newer = rotated_by_another_replica(&backup);
    let (mut replica, mut api) = a_replica_checks();
    api.serves_configurations_publishing(&newer).await;
    // Restored from the backup: generation 1 under a published 2.
    api.serves_secret(&backup, SECRET_RV).await;

    let restored = api.takes_the_secret_written_over(SECRET_RV).await;
    assert_eq!(
        restored.generation, 3,
        "moved past the published generation"
    );
    assert_eq!(restored.cas, backup.cas, "only the generation moved");
    assert_eq!(restored.leaf, backup.leaf);
    api.takes_the_bundle_on_both(&restored).await;

    api.sees_the_check_end(&mut replica).await;
    assert!(replica.serves(backup.leaf.as_ref().unwrap()));
}

#[tokio::test]
async fn a_replica_with_a_stale_secret_never_overwrites_the_newer_bundle() {
    let backup = secret_written(days(2));
    let newer = rotated_by_another_replica(&backup);
    let (mut replica, mut api) = a_replica_checks();
    api.serves_configurations_publishing(&newer).await;
    // Its read of the Secret predates the other replica's write.
    api.serves_secret(&backup, SECRET_RV).await;

    // It would move past the published bundle, but the Secret changed...
    let attempt = api.refuses_the_secret_written_over(SECRET_RV).await;
    assert_eq!(attempt.generation, 3);
    // ...so it reads the newer one, finds nothing to do, and publishes nothing.
    api.serves_secret(&newer, NEWER_SECRET_RV).await;

    api.sees_the_check_end(&mut replica).await;
    assert!(replica.serves(newer.leaf.as_ref().unwrap()));
    assert_eq!(replica.errors(), 0);
}
