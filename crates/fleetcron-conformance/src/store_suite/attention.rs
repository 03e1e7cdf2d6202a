//! The store's clock and the idle poll.

use super::fixtures::*;
use super::history::reference;
use super::{AttentionOrder, StoreHarness, Suite};
use chrono::Duration;
use fleetcron_core::{Mutation, Store};

/// `due_for_attention` answers the ids whose attention time is at or before the store's now — expired
/// leases and pending work, never a live lease or future work — at most `limit`, in the store's
/// declared order, the same ids as the reference store; sub-millisecond attention times are due only
/// once the whole millisecond has passed; clearing the pending work clears the mark.
pub async fn due_for_attention_answers_due_ids_up_to_the_limit<H: StoreHarness>(suite: &Suite<'_, H>) {
    let fresh = suite.fresh(epoch()).await;
    let (clock, ns, store) = (&fresh.clock, &fresh.ns, &fresh.store);
    let now = store.now().await.expect("now");
    put_state(
        &**store,
        state_wanting_attention("p-past", now, now - Duration::seconds(1)),
    )
    .await;
    put_state(&**store, state_wanting_attention("p-now", now, now)).await;
    put_state(
        &**store,
        state_wanting_attention("p-future", now, now + Duration::seconds(30)),
    )
    .await;
    put_state(&**store, state_with_lease("l-expired", now, now - Duration::seconds(3))).await;
    put_state(&**store, state_with_lease("l-live", now, now + Duration::seconds(40))).await;
    put_state(&**store, new_state("idle", now)).await;

    let (due, first_two) = match suite.capabilities.attention_order {
        AttentionOrder::ById => (["l-expired", "p-now", "p-past"], ["l-expired", "p-now"]),
        AttentionOrder::MostOverdueFirst => (["l-expired", "p-past", "p-now"], ["l-expired", "p-past"]),
    };
    let (at, ids) = store.due_for_attention(100).await.expect("poll");
    assert!(at >= now && whole_ms(at), "{now} then {at}");
    assert_eq!(ids, due);
    assert_eq!(store.due_for_attention(2).await.expect("poll").1, first_two);
    let (at0, ids) = store.due_for_attention(0).await.expect("poll");
    assert!(ids.is_empty() && at0 >= at);

    if suite.movable_clock(ns, store) {
        // A store whose clock steps back holds its last reading: a frozen now, half a millisecond
        // before the next task wants attention.
        let held = store.now().await.expect("now");
        suite.at_clock(ns, clock, store, held - Duration::seconds(10)).await;
        assert_eq!(store.now().await.expect("now"), held);
        let sub_ms = held + Duration::microseconds(500);
        put_state(&**store, state_wanting_attention("p-sub-ms", held, sub_ms)).await;
        let (at, ids) = store.due_for_attention(100).await.expect("poll");
        assert_eq!(at, held);
        assert!(
            !ids.contains(&"p-sub-ms".to_owned()),
            "due half a millisecond early: {ids:?}"
        );
        suite.at_clock(ns, clock, store, held + ms(1)).await;
        let (_, ids) = store.due_for_attention(100).await.expect("poll");
        assert!(ids.contains(&"p-sub-ms".to_owned()), "{ids:?}");
    } else {
        put_state(
            &**store,
            state_wanting_attention("p-sub-ms", now, now + Duration::microseconds(500)),
        )
        .await;
    }

    // A minute later everything that waits is due.
    let later = suite
        .at_clock(
            ns,
            clock,
            store,
            store.now().await.expect("now") + Duration::seconds(60),
        )
        .await;
    let (_, mut ids) = later.due_for_attention(100).await.expect("poll");
    ids.sort();
    assert_eq!(ids, ["l-expired", "l-live", "p-future", "p-now", "p-past", "p-sub-ms"]);
    // Clearing the pending work clears the attention mark.
    put_state(&**store, new_state("p-now", now)).await;
    let (_, ids) = later.due_for_attention(100).await.expect("poll");
    assert!(!ids.contains(&"p-now".to_owned()), "{ids:?}");

    // The same answers as the reference store.
    let memory = reference(clock);
    for state in store.load(None).await.expect("load").1 {
        put_state(&memory, state).await;
    }
    for limit in [0, 1, 3, 100] {
        let mut expected = memory.due_for_attention(limit).await.expect("memory poll").1;
        let mut found = later.due_for_attention(limit).await.expect("poll").1;
        if suite.capabilities.attention_order == AttentionOrder::MostOverdueFirst {
            if limit < 100 {
                assert_eq!(found.len(), expected.len(), "limit {limit}: {found:?}");
                continue;
            }
            expected.sort();
            found.sort();
        }
        assert_eq!(found, expected, "limit {limit}: matches the reference store");
    }
}

/// The store's clock reads whole milliseconds and never goes back, whichever operation reads it; when
/// the clock under it steps back, the store holds its last reading (for every operation) until the
/// clock passes it.
pub async fn now_is_monotonic_and_whole_milliseconds<H: StoreHarness>(suite: &Suite<'_, H>) {
    let fresh = suite.fresh(epoch()).await;
    let (clock, ns, store) = (&fresh.clock, &fresh.ns, &fresh.store);
    let first = store.now().await.expect("now");
    assert!(whole_ms(first), "{first}");
    assert!(
        (first - epoch()).num_seconds().abs() < 5,
        "the case's clock reads 2030: {first}"
    );
    let mut previous = first;
    for round in 0..20 {
        let now = read_now(&**store, round).await;
        assert!(whole_ms(now), "{now}");
        assert!(now >= previous, "round {round}: {now} < {previous}");
        previous = now;
    }
    if !suite.movable_clock(ns, store) {
        eprintln!(
            "{}: this store's clock cannot move while it is open; the step back is left out",
            suite.case
        );
        return;
    }
    // The clock under the store steps back an hour: the store holds its last reading.
    suite.at_clock(ns, clock, store, previous - Duration::hours(1)).await;
    for round in 0..5 {
        assert_eq!(read_now(&**store, round).await, previous, "round {round}");
    }
    put_state_now(&**store, "registered-while-held").await;
    let registered = state_of(&**store, "registered-while-held").await.expect("stored");
    assert_eq!(registered.registered_at, previous, "decided at the held reading");
    // And moves on when the clock does.
    suite.at_clock(ns, clock, store, previous + Duration::hours(1)).await;
    let later = store.now().await.expect("now");
    assert!(later >= previous + Duration::minutes(59) && whole_ms(later), "{later}");
}

/// Registers `id` at the store's now.
async fn put_state_now<S: Store + ?Sized>(store: &S, id: &str) {
    store
        .mutate(&[id.to_owned()], &mut |now, id, _| Mutation {
            state: Some(new_state(id, now)),
            ..Mutation::none()
        })
        .await
        .expect("register");
}

/// The store's now as one of its operations reads it.
async fn read_now<S: Store + ?Sized>(store: &S, round: usize) -> fleetcron_core::Timestamp {
    match round % 5 {
        0 => store.now().await.expect("now"),
        1 => store.due_for_attention(1).await.expect("poll").0,
        2 => store.load(None).await.expect("load").0,
        3 => store
            .mutate(&["t".to_owned()], &mut |now, id, stored| Mutation {
                state: Some(stored.cloned().unwrap_or_else(|| new_state(id, now))),
                ..Mutation::none()
            })
            .await
            .expect("mutate"),
        _ => store.mutate(&[], &mut |_, _, _| Mutation::none()).await.expect("empty"),
    }
}
