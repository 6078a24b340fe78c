//! The numbers flow end to end: upload, release, get, list, assign, unassign, isolation.

use std::collections::BTreeSet;

use futures_util::{StreamExt, TryStreamExt};
use ocx_client::pb;
use ocx_testkit::{TestServer, carrier, consent, item, numbers, provision, tenant};
use tonic::Code;

fn status_of(r: &pb::NumberResult) -> pb::ItemStatus {
    pb::ItemStatus::try_from(r.status).expect("known status")
}

#[tokio::test]
async fn upload_gives_a_result_per_item_and_stores_the_valid_ones() {
    let server = TestServer::start().await;
    let platform = server.platform().await;
    let a = carrier(&platform, "acme-tel").await;
    let b = carrier(&platform, "bravo-tel").await;
    consent(&platform, "acme-tel", &tenant(1)).await;
    consent(&platform, "bravo-tel", &tenant(2)).await;
    platform
        .grant_consent(pb::GrantConsentRequest {
            carrier_id: "acme-tel".into(),
            tenant_id: tenant(3),
            status: pb::ConsentStatus::Suspended as i32,
            ..Default::default()
        })
        .await
        .expect("suspended consent");
    platform
        .grant_consent(pb::GrantConsentRequest {
            carrier_id: "acme-tel".into(),
            tenant_id: tenant(4),
            consented_countries: vec!["US".into()],
            ..Default::default()
        })
        .await
        .expect("US-only consent");
    provision(&b.client, &tenant(2), &["+12065550100".into()]).await;
    provision(&a.client, &tenant(1), &["+442079460001".into()]).await;

    let mut gb = item("+442079460099", &tenant(4));
    gb.country_code = "GB".into();
    let mut bad_cap = item("+442079460007", &tenant(1));
    bad_cap.capabilities = vec![77];
    let request = pb::UploadNumbersRequest {
        request_id: String::new(),
        carrier_id: String::new(),
        numbers: vec![
            item("+442079460002", &tenant(1)), // 0 created
            item("+442079460001", &tenant(1)), // 1 unchanged duplicate
            item("+12065550100", &tenant(1)),  // 2 another carrier's number
            item("0207946", &tenant(1)),       // 3 bad E.164
            item("+442079460003", ""),         // 4 empty tenant
            item("+442079460004", &tenant(2)), // 5 tenant consented to another carrier only
            item("+442079460005", &tenant(3)), // 6 suspended consent
            gb,                                // 7 country not consented
            bad_cap,                           // 8 unknown enum value
            item("+442079460002", &tenant(1)), // 9 duplicate within the batch
        ],
    };
    let response = a
        .client
        .upload_numbers(request)
        .await
        .expect("partial success is OK");
    let statuses: Vec<_> = response.results.iter().map(status_of).collect();
    use pb::ItemStatus::{Created, Rejected, Unchanged};
    assert_eq!(
        statuses,
        [
            Created, Unchanged, Rejected, Rejected, Rejected, Rejected, Rejected, Rejected,
            Rejected, Unchanged
        ]
    );
    assert_eq!(
        (
            response.created_count,
            response.unchanged_count,
            response.rejected_count
        ),
        (1, 2, 7)
    );
    for (i, r) in response.results.iter().enumerate() {
        assert_eq!(r.index as usize, i);
    }
    let r = &response.results;
    assert_eq!(r[3].violations[0].field, "numbers[3].number");
    assert_eq!(r[4].violations[0].field, "numbers[4].tenant_id");
    assert_eq!(r[8].violations[0].field, "numbers[8].capabilities[0]");
    assert!(r[2].reason.contains("not available"), "{}", r[2].reason);
    assert!(
        !r[2].reason.contains("bravo"),
        "must not reveal the owner: {}",
        r[2].reason
    );
    assert!(r[5].reason.contains("not consented"), "{}", r[5].reason);
    assert!(r[6].reason.contains("not active"), "{}", r[6].reason);
    assert!(r[7].reason.contains("GB"), "{}", r[7].reason);
    assert!(
        r[0].phone_number
            .as_ref()
            .is_some_and(|n| n.state == pb::NumberState::Provisioned as i32 && n.version == 1)
    );

    // What was stored: exactly the two valid numbers.
    let listed = a
        .client
        .list_numbers(Default::default())
        .await
        .expect("list");
    let stored: Vec<_> = listed
        .phone_numbers
        .iter()
        .map(|n| n.number.as_str())
        .collect();
    assert_eq!(stored, ["+442079460001", "+442079460002"]);
    // And the other carrier's number is untouched.
    let theirs = b
        .client
        .get_number("", "+12065550100")
        .await
        .expect("still theirs");
    assert_eq!(theirs.carrier_id, "bravo-tel");
    assert_eq!(theirs.version, 1);

    // Changing attributes of one's own number is UPDATED, with a new version.
    let mut changed = item("+442079460002", &tenant(1));
    changed.civic_address_id = "addr-1".into();
    let response = a
        .client
        .upload_numbers(pb::UploadNumbersRequest {
            request_id: String::new(),
            carrier_id: String::new(),
            numbers: vec![changed],
        })
        .await
        .expect("update");
    assert_eq!(status_of(&response.results[0]), pb::ItemStatus::Updated);
    assert_eq!(
        response.results[0].phone_number.as_ref().map(|n| n.version),
        Some(2)
    );
}

#[tokio::test]
async fn batch_limits_and_negative_page_sizes_are_invalid_argument() {
    let server = TestServer::start().await;
    let platform = server.platform().await;
    let a = carrier(&platform, "acme-tel").await;
    consent(&platform, "acme-tel", &tenant(1)).await;
    let too_many: Vec<_> = numbers("+4420794", 0, 1001)
        .iter()
        .map(|n| item(n, &tenant(1)))
        .collect();
    let err = a
        .client
        .upload_numbers(pb::UploadNumbersRequest {
            request_id: String::new(),
            carrier_id: String::new(),
            numbers: too_many,
        })
        .await
        .expect_err("over limit");
    assert_eq!(err.code(), Some(Code::InvalidArgument));
    assert_eq!(err.violations()[0].field, "numbers");
    assert!(
        err.violations()[0].description.contains("1000"),
        "{:?}",
        err.violations()
    );
    let err = a
        .client
        .upload_numbers(pb::UploadNumbersRequest::default())
        .await
        .expect_err("empty");
    assert_eq!(err.code(), Some(Code::InvalidArgument));

    let err = a
        .client
        .list_numbers(pb::ListNumbersRequest {
            page_size: -5,
            ..Default::default()
        })
        .await
        .expect_err("negative page size");
    assert_eq!(err.code(), Some(Code::InvalidArgument));
    assert_eq!(err.violations()[0].field, "page_size");
    // Above the maximum is not an error: it is served as the maximum (see limits.rs).
    a.client
        .list_numbers(pb::ListNumbersRequest {
            page_size: 1001,
            ..Default::default()
        })
        .await
        .expect("a page size above the maximum is clamped");
    let err = a
        .client
        .list_numbers(pb::ListNumbersRequest {
            state: 17,
            tenant_id: "nope".into(),
            page_size: -1,
            ..Default::default()
        })
        .await
        .expect_err("several problems");
    let fields: Vec<_> = err.violations().iter().map(|v| v.field.as_str()).collect();
    assert_eq!(fields, ["tenant_id", "state", "page_size"]);
    let err = a
        .client
        .get_number("", "12345")
        .await
        .expect_err("bad number");
    assert_eq!(err.violations()[0].field, "number");
    let err = a
        .client
        .list_numbers(pb::ListNumbersRequest {
            page_token: "garbage".into(),
            ..Default::default()
        })
        .await
        .expect_err("token");
    assert_eq!(err.violations()[0].field, "page_token");
}

#[tokio::test]
async fn assign_unassign_release_and_versions() {
    let server = TestServer::start().await;
    let platform = server.platform().await;
    let a = carrier(&platform, "acme-tel").await;
    consent(&platform, "acme-tel", &tenant(1)).await;
    consent(&platform, "acme-tel", &tenant(2)).await;
    let n = "+442079460010";
    provision(&a.client, &tenant(1), &[n.into()]).await;

    let assign = |sip: &str, t: String| pb::AssignNumberRequest {
        request_id: String::new(),
        number: n.into(),
        tenant_id: t,
        assignment_type: pb::AssignmentType::User as i32,
        sip_uri: sip.into(),
        user_id: "user-1".into(),
    };
    let assigned = platform
        .assign_number(assign("sip:alice@contoso.com", tenant(1)))
        .await
        .expect("assign");
    assert_eq!(assigned.state, pb::NumberState::Assigned as i32);
    assert_eq!(assigned.sip_uri, "sip:alice@contoso.com");
    assert_eq!(assigned.version, 2);
    let again = platform
        .assign_number(assign("sip:alice@contoso.com", tenant(1)))
        .await
        .expect("same again");
    assert_eq!(again.version, 2, "identical assignment is a no-op");
    let seen = a.client.get_number("", n).await.expect("get");
    assert_eq!(
        (
            seen.sip_uri.as_str(),
            seen.user_id.as_str(),
            seen.assignment_type
        ),
        (
            "sip:alice@contoso.com",
            "user-1",
            pb::AssignmentType::User as i32
        )
    );

    let err = platform
        .assign_number(assign("alice@contoso.com", tenant(1)))
        .await
        .expect_err("bad sip");
    assert_eq!(err.code(), Some(Code::InvalidArgument));
    assert_eq!(err.violations()[0].field, "sip_uri");
    let mut unknown_type = assign("sip:alice@contoso.com", tenant(1));
    unknown_type.assignment_type = 99;
    assert_eq!(
        platform
            .assign_number(unknown_type)
            .await
            .expect_err("enum")
            .violations()[0]
            .field,
        "assignment_type"
    );
    let err = platform
        .assign_number(assign("sip:alice@contoso.com", tenant(2)))
        .await
        .expect_err("wrong tenant");
    assert_eq!(err.code(), Some(Code::FailedPrecondition));
    let mut missing = assign("sip:alice@contoso.com", tenant(1));
    missing.number = "+442079469999".into();
    assert_eq!(
        platform
            .assign_number(missing)
            .await
            .expect_err("missing")
            .code(),
        Some(Code::NotFound)
    );

    // Assigned numbers cannot be released or moved.
    let released = a
        .client
        .release_numbers(pb::ReleaseNumbersRequest {
            request_id: String::new(),
            carrier_id: String::new(),
            numbers: vec![n.into()],
        })
        .await
        .expect("release call");
    assert_eq!(status_of(&released.results[0]), pb::ItemStatus::Rejected);
    let moved = a
        .client
        .upload_numbers(pb::UploadNumbersRequest {
            request_id: String::new(),
            carrier_id: String::new(),
            numbers: vec![item(n, &tenant(2))],
        })
        .await
        .expect("upload call");
    assert_eq!(status_of(&moved.results[0]), pb::ItemStatus::Rejected);

    let unassigned = platform
        .unassign_number(n, &tenant(1))
        .await
        .expect("unassign");
    assert_eq!(unassigned.state, pb::NumberState::Provisioned as i32);
    assert!(unassigned.sip_uri.is_empty() && unassigned.user_id.is_empty());
    assert_eq!(unassigned.version, 3);
    assert_eq!(
        platform
            .unassign_number(n, &tenant(1))
            .await
            .expect("no-op")
            .version,
        3
    );

    let released = a
        .client
        .release_numbers(pb::ReleaseNumbersRequest {
            request_id: String::new(),
            carrier_id: String::new(),
            numbers: vec![n.into(), n.into(), "+442079469999".into(), "bad".into()],
        })
        .await
        .expect("release");
    let statuses: Vec<_> = released.results.iter().map(status_of).collect();
    assert_eq!(
        statuses,
        [
            pb::ItemStatus::Updated,
            pb::ItemStatus::Unchanged,
            pb::ItemStatus::Rejected,
            pb::ItemStatus::Rejected
        ]
    );
    assert_eq!(released.results[3].violations[0].field, "numbers[3]");
    let gone = a
        .client
        .get_number("", n)
        .await
        .expect("released numbers stay readable");
    assert_eq!(
        (gone.state, gone.version),
        (pb::NumberState::Released as i32, 4)
    );
    assert_eq!(
        platform
            .assign_number(assign("sip:alice@contoso.com", tenant(1)))
            .await
            .expect_err("released")
            .code(),
        Some(Code::FailedPrecondition)
    );

    // A released number can be provisioned again, by another carrier too, whose own history
    // of it starts at 1; acme's released number stays as it was, readable by acme.
    let b = carrier(&platform, "bravo-tel").await;
    consent(&platform, "bravo-tel", &tenant(2)).await;
    provision(&b.client, &tenant(2), &[n.into()]).await;
    assert_eq!(
        b.client
            .get_number("", n)
            .await
            .expect("bravo's now")
            .version,
        1
    );
    assert_eq!(
        a.client.get_number("", n).await.expect("acme's history"),
        gone
    );
}

#[tokio::test]
async fn carriers_are_isolated_on_every_carrier_method() {
    let server = TestServer::start().await;
    let platform = server.platform().await;
    let a = carrier(&platform, "acme-tel").await;
    let b = carrier(&platform, "bravo-tel").await;
    consent(&platform, "acme-tel", &tenant(1)).await;
    consent(&platform, "bravo-tel", &tenant(2)).await;
    let theirs = "+12065550100";
    provision(&b.client, &tenant(2), &[theirs.into()]).await;
    provision(&a.client, &tenant(1), &["+442079460001".into()]).await;

    // GetNumber: another carrier's number is NOT_FOUND with the same message as a missing one.
    let other = a.client.get_number("", theirs).await.expect_err("not mine");
    let missing = a
        .client
        .get_number("", "+12065550199")
        .await
        .expect_err("missing");
    assert_eq!(other.code(), Some(Code::NotFound));
    assert_eq!(
        other.to_string().replace(theirs, "N"),
        missing.to_string().replace("+12065550199", "N")
    );
    // ListNumbers / ListConsents: only one's own.
    let listed = a
        .client
        .list_numbers(Default::default())
        .await
        .expect("list");
    assert!(
        listed
            .phone_numbers
            .iter()
            .all(|n| n.carrier_id == "acme-tel")
    );
    assert_eq!(listed.total_size, 1);
    let tenant_filter = pb::ListNumbersRequest {
        tenant_id: tenant(2),
        ..Default::default()
    };
    assert!(
        a.client
            .list_numbers(tenant_filter)
            .await
            .expect("list")
            .phone_numbers
            .is_empty()
    );
    let consents = a
        .client
        .list_consents(Default::default())
        .await
        .expect("consents");
    assert!(consents.consents.iter().all(|c| c.carrier_id == "acme-tel"));
    // ReleaseNumbers: another carrier's number is "not found" and stays as it was.
    let released = a
        .client
        .release_numbers(pb::ReleaseNumbersRequest {
            request_id: String::new(),
            carrier_id: String::new(),
            numbers: vec![theirs.into()],
        })
        .await
        .expect("release");
    assert_eq!(status_of(&released.results[0]), pb::ItemStatus::Rejected);
    assert_eq!(
        b.client
            .get_number("", theirs)
            .await
            .expect("untouched")
            .state,
        pb::NumberState::Provisioned as i32
    );
    // UploadNumbers: cannot take it.
    let taken = a
        .client
        .upload_numbers(pb::UploadNumbersRequest {
            request_id: String::new(),
            carrier_id: String::new(),
            numbers: vec![item(theirs, &tenant(1))],
        })
        .await
        .expect("upload");
    assert_eq!(status_of(&taken.results[0]), pb::ItemStatus::Rejected);
    // WatchNumberEvents: only one's own events.
    platform
        .assign_number(pb::AssignNumberRequest {
            request_id: String::new(),
            number: theirs.into(),
            tenant_id: tenant(2),
            assignment_type: 1,
            sip_uri: "sip:x@y.com".into(),
            user_id: String::new(),
        })
        .await
        .expect("assign theirs");
    let events: Vec<pb::NumberEvent> = a
        .client
        .watch_number_events("", 0)
        .await
        .expect("watch")
        .take(1)
        .try_collect()
        .await
        .expect("events");
    assert_eq!(
        events[0].phone_number.as_ref().map(|n| n.number.as_str()),
        Some("+442079460001")
    );
    // Then an event of acme's own: the very next event acme sees must be it (sequence 2).
    platform
        .assign_number(pb::AssignNumberRequest {
            request_id: String::new(),
            number: "+442079460001".into(),
            tenant_id: tenant(1),
            assignment_type: 1,
            sip_uri: "sip:a@acme.com".into(),
            user_id: String::new(),
        })
        .await
        .expect("assign mine");
    let events: Vec<pb::NumberEvent> = a
        .client
        .watch_number_events("", 1)
        .await
        .expect("watch")
        .take(1)
        .try_collect()
        .await
        .expect("events");
    assert_eq!(events[0].sequence, 2);
    assert_eq!(
        events[0].phone_number.as_ref().map(|n| n.sip_uri.as_str()),
        Some("sip:a@acme.com")
    );
}

#[tokio::test]
async fn pagination_loses_and_repeats_nothing_while_writes_happen() {
    let server = TestServer::start().await;
    let platform = server.platform().await;
    let a = carrier(&platform, "acme-tel").await;
    consent(&platform, "acme-tel", &tenant(1)).await;
    // 600 numbers at even positions, before the listing begins.
    let existing: Vec<String> = (0..600).map(|i| format!("+4420794{:05}", i * 2)).collect();
    for chunk in existing.chunks(300) {
        provision(&a.client, &tenant(1), chunk).await;
    }
    // Between every two pages, numbers are added (at odd positions, spread over the whole range,
    // so some land behind the cursor and some ahead of it) and existing ones are updated.
    let mut seen = Vec::new();
    let mut token = String::new();
    let mut pages = 0u32;
    loop {
        let page = a
            .client
            .list_numbers(pb::ListNumbersRequest {
                page_size: 37,
                page_token: token,
                ..Default::default()
            })
            .await
            .expect("page");
        pages += 1;
        seen.extend(page.phone_numbers.into_iter().map(|n| n.number));
        token = page.next_page_token;
        if token.is_empty() {
            break;
        }
        let added: Vec<String> = (0..10)
            .map(|j| format!("+4420794{:05}", (j * 60 + pages * 2) * 2 + 1))
            .collect();
        provision(&a.client, &tenant(1), &added).await;
        let mut updated = item(
            &existing[(pages as usize * 31) % existing.len()],
            &tenant(1),
        );
        updated.location_id = format!("loc-{pages}");
        a.client
            .upload_numbers(pb::UploadNumbersRequest {
                request_id: String::new(),
                carrier_id: String::new(),
                numbers: vec![updated],
            })
            .await
            .expect("update");
    }
    assert!(pages > 16);
    let unique: BTreeSet<_> = seen.iter().cloned().collect();
    assert_eq!(unique.len(), seen.len(), "a number was served twice");
    let sorted: Vec<_> = unique.iter().cloned().collect();
    assert_eq!(sorted, seen, "pages must come in number order");
    for n in &existing {
        assert!(unique.contains(n), "{n} existed throughout and was lost");
    }

    // The SDK's page-following stream sees everything once, and filters work.
    let all: Vec<pb::PhoneNumber> = a
        .client
        .numbers(pb::ListNumbersRequest {
            page_size: 100,
            ..Default::default()
        })
        .try_collect()
        .await
        .expect("stream");
    let total = a
        .client
        .list_numbers(Default::default())
        .await
        .expect("total")
        .total_size;
    assert_eq!(all.len() as i64, total);
    let cut = all[10].update_time;
    let since = a
        .client
        .numbers(pb::ListNumbersRequest {
            updated_since: cut,
            state: pb::NumberState::Provisioned as i32,
            ..Default::default()
        })
        .try_collect::<Vec<_>>()
        .await
        .expect("since");
    let cut = cut.expect("update time");
    let at_or_after = |n: &pb::PhoneNumber| {
        n.update_time
            .as_ref()
            .is_some_and(|u| (u.seconds, u.nanos) >= (cut.seconds, cut.nanos))
    };
    let expected: Vec<&str> = all
        .iter()
        .filter(|n| at_or_after(n))
        .map(|n| n.number.as_str())
        .collect();
    let got: Vec<&str> = since.iter().map(|n| n.number.as_str()).collect();
    assert!(!expected.is_empty() && expected.len() < all.len());
    assert_eq!(got, expected);

    // A token cannot be reused with other filters.
    let first = a
        .client
        .list_numbers(pb::ListNumbersRequest {
            page_size: 5,
            ..Default::default()
        })
        .await
        .expect("first");
    let err = a
        .client
        .list_numbers(pb::ListNumbersRequest {
            page_size: 5,
            state: 2,
            page_token: first.next_page_token,
            ..Default::default()
        })
        .await
        .expect_err("filters changed");
    assert_eq!(err.violations()[0].field, "page_token");
}

#[tokio::test]
async fn removed_consent_and_unlisted_countries_block_uploads() {
    let server = TestServer::start().await;
    let platform = server.platform().await;
    let a = carrier(&platform, "acme-tel").await;
    consent(&platform, "acme-tel", &tenant(1)).await;
    provision(&a.client, &tenant(1), &["+442079460001".into()]).await;
    platform
        .revoke_consent("acme-tel", &tenant(1))
        .await
        .expect("revoke");
    let r = a
        .client
        .upload_numbers(pb::UploadNumbersRequest {
            request_id: String::new(),
            carrier_id: String::new(),
            numbers: vec![item("+442079460002", &tenant(1))],
        })
        .await
        .expect("upload");
    assert_eq!(status_of(&r.results[0]), pb::ItemStatus::Rejected);
    assert!(
        r.results[0].reason.contains("not active"),
        "{}",
        r.results[0].reason
    );
    // Numbers already provisioned stay.
    assert_eq!(
        a.client
            .get_number("", "+442079460001")
            .await
            .expect("stays")
            .state,
        pb::NumberState::Provisioned as i32
    );

    platform
        .grant_consent(pb::GrantConsentRequest {
            carrier_id: "acme-tel".into(),
            tenant_id: tenant(2),
            consented_countries: vec!["GB".into()],
            ..Default::default()
        })
        .await
        .expect("GB only");
    let mut gb = item("+442079460003", &tenant(2));
    gb.country_code = "GB".into();
    let r = a
        .client
        .upload_numbers(pb::UploadNumbersRequest {
            request_id: String::new(),
            carrier_id: String::new(),
            numbers: vec![item("+442079460004", &tenant(2)), gb],
        })
        .await
        .expect("upload");
    assert_eq!(
        r.results.iter().map(status_of).collect::<Vec<_>>(),
        [pb::ItemStatus::Rejected, pb::ItemStatus::Created]
    );
    assert!(
        r.results[0].reason.contains("country_code"),
        "{}",
        r.results[0].reason
    );
}
