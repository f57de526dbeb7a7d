//! The controller acts only while the admission policies that narrow its
//! token are in force: without them it stays NotReady, says why (`/readyz`,
//! a gauge, a Warning event) and takes no Lease; when one goes while it runs,
//! it stops.

mod controller_support;

use controller_support as sg;
use k8s_openapi::api::admissionregistration::v1::ValidatingAdmissionPolicyBinding;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, DeleteParams, ListParams};
use sessionguard_e2e::harness::{TestEnv, await_, identity};
use sessionguard_e2e::{Result, check, wait};

#[tokio::test]
async fn without_its_policies_the_controller_stays_not_ready_and_stops_when_one_goes() -> Result<()>
{
    let _serial = sg::serial().await;
    let Some(env) = TestEnv::start("policies").await? else {
        return Ok(());
    };
    sg::install(env.client()).await?;
    let id = identity::chart_controller(&env, false).await?;

    // A release name whose policies were never installed (as with
    // admissionPolicy.enabled=false, or a cluster without the API).
    let absent = format!("{}-absent", id.fullname);
    let mut lonely = sg::spawn_controller(
        &env,
        &id,
        "policies-absent",
        &["--admission-policies", &absent],
    )?;
    let why = wait::until(
        "/readyz to say the policies are not in force",
        await_::TIMEOUT,
        || async {
            Ok(match lonely.readyz().await {
                Ok((503, body)) if body.contains("admission policies not in force") => Some(body),
                _ => None,
            })
        },
    )
    .await?;
    check(
        why.contains(&format!("{absent}-controller-pods")),
        format!("/readyz must name the missing policy: {why}"),
    )?;
    let missing = lonely
        .metric("sessionguard_admission_policies_missing", &[])
        .await?
        .unwrap_or(0.0);
    check(
        missing >= 5.0,
        format!("all five policies are missing, the gauge says {missing}"),
    )?;
    let events: Api<Event> = env.api();
    let lp = ListParams::default().fields(&format!("regarding.name={}", id.lease));
    let event = wait::until(
        "a Warning event AdmissionPoliciesMissing on the Lease",
        await_::TIMEOUT,
        || async {
            Ok(events.list(&lp).await?.items.into_iter().find(|e| {
                e.reason.as_deref() == Some("AdmissionPoliciesMissing")
                    && e.type_.as_deref() == Some("Warning")
            }))
        },
    )
    .await?;
    check(
        event.note.as_deref().unwrap_or("").contains(&absent),
        format!("the event names what is missing: {:?}", event.note),
    )?;
    // Not in force means no Lease, so no write: the policy check comes first.
    let leases: Api<Lease> = env.api();
    check(
        leases.get_opt(&id.lease).await?.is_none(),
        "no Lease may be taken without the policies",
    )?;
    check(!lonely.exited(), "it waits for them; it does not exit")?;
    lonely.stop();

    // With the release's policies it leads; then one binding goes.
    let mut ctl = sg::spawn_controller(
        &env,
        &id,
        "policies-present",
        &["--admission-policies-recheck", "1s"],
    )?;
    ctl.until_leader().await?;
    let binding = format!("{}-controller-pods", id.fullname);
    let bindings: Api<ValidatingAdmissionPolicyBinding> = Api::all(env.client().clone());
    bindings.delete(&binding, &DeleteParams::default()).await?;
    wait::until(
        "the controller to stop once a binding is gone",
        await_::TIMEOUT,
        || {
            let gone = ctl.exited();
            async move { Ok(gone.then_some(())) }
        },
    )
    .await?;
    let log = std::fs::read_to_string(&ctl.log).unwrap_or_default();
    check(
        log.contains(&binding),
        format!("the log must name the missing binding {binding}"),
    )?;
    env.finish().await
}
