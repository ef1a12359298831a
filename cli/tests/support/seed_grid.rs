//! The seed app's `product_sum` grid as the tests check it: the totals its orders must give,
//! and a live subscriber's view of it (through the gateway, the real reader).

use std::{collections::BTreeMap, time::Duration};

use aerogrid_proto::v1::{
    GridRef, SubscribeRequest, grid_service_client::GridServiceClient, row_change,
    subscribe_response, value,
};

/// Units sold per product for seed orders `0..count` (`support::produce_orders` with 17
/// products).
pub(crate) fn expected_totals(count: u64) -> BTreeMap<String, i64> {
    let mut totals = BTreeMap::new();
    for n in 0..count {
        *totals.entry(format!("p{}", n % 17)).or_insert(0) += (n % 5 + 1) as i64;
    }
    totals
}

/// A subscriber of the seed grid that subscribes again whenever its stream ends or fails.
pub(crate) fn follow(
    url: String,
    token: String,
) -> tokio::sync::watch::Receiver<BTreeMap<String, i64>> {
    let (sender, receiver) = tokio::sync::watch::channel(BTreeMap::new());
    tokio::spawn(async move {
        loop {
            let attempt = async {
                let channel = tonic::transport::Endpoint::from_shared(url.clone())
                    .ok()?
                    .connect()
                    .await
                    .ok()?;
                let mut client = GridServiceClient::new(channel);
                let grid = GridRef {
                    team: "acme".into(),
                    app: "orders".into(),
                    grid: "product_sum".into(),
                };
                let mut request = tonic::Request::new(SubscribeRequest {
                    grid: Some(grid),
                    ..Default::default()
                });
                request
                    .metadata_mut()
                    .insert("authorization", format!("Bearer {token}").parse().ok()?);
                let mut stream = client.subscribe(request).await.ok()?.into_inner();
                let mut grid = BTreeMap::new();
                while let Ok(Some(message)) = stream.message().await {
                    apply(&mut grid, message.event?);
                    sender.send_replace(grid.clone());
                }
                Some(())
            };
            let _ = attempt.await;
            if sender.is_closed() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    receiver
}

pub(crate) fn int_of(value: &aerogrid_proto::v1::Value) -> i64 {
    match value.kind {
        Some(value::Kind::Int(int)) => int,
        ref other => panic!("an int: {other:?}"),
    }
}

pub(crate) fn apply(grid: &mut BTreeMap<String, i64>, event: subscribe_response::Event) {
    match event {
        subscribe_response::Event::Changes(changes) => {
            for row in changes.rows {
                match row.change {
                    Some(row_change::Change::Updated(cells)) => {
                        grid.insert(row.key, int_of(&cells.values[0]));
                    }
                    Some(row_change::Change::Deleted(_)) => {
                        grid.remove(&row.key);
                    }
                    None => {}
                }
            }
        }
        subscribe_response::Event::Snapshot(snapshot) => {
            *grid =
                snapshot.rows.iter().map(|row| (row.key.clone(), int_of(&row.values[0]))).collect();
        }
        subscribe_response::Event::Heartbeat(_) => {}
    }
}
