//! Starting points for a new app. The seed program is the one the platform's tests run.

pub(crate) struct Template {
    pub(crate) id: &'static str,
    pub(crate) title: &'static str,
    pub(crate) code: &'static str,
}

pub(crate) const TEMPLATES: &[Template] = &[
    Template {
        id: "seed",
        title: "Units sold per product (orders → sum)",
        code: include_str!("../../connector/python/tests/seed.py"),
    },
    Template {
        id: "top",
        title: "Top 10 products by units sold",
        code: r#"import aerogrid

app = aerogrid.App('topproducts', broker=BROKER_URI)

class Order(aerogrid.Record):
    product: str
    quantity: int

orders_topic = app.topic('orders', key_type=str, value_type=Order)

top = app.Grid('top_products', columns=['product', 'units_sold'])
totals = {}

@app.stream(orders_topic)
async def rank(orders):
    async for order in orders:
        totals[order.product] = totals.get(order.product, 0) + order.quantity
        best = sorted(totals.items(), key=lambda item: -item[1])[:10]
        for rank, (product, units) in enumerate(best, start=1):
            top[str(rank)] = {'product': product, 'units_sold': units}
"#,
    },
    Template {
        id: "window",
        title: "Orders in the last minute (rolling window with a timer)",
        code: r#"import time
import aerogrid

app = aerogrid.App('lastminute', broker=BROKER_URI)

class Order(aerogrid.Record):
    product: str
    quantity: int

orders_topic = app.topic('orders', key_type=str, value_type=Order)

recent = app.Grid('last_minute', columns=['orders', 'units'])
seen = []  # (time, product, quantity)

@app.stream(orders_topic)
async def collect(orders):
    async for order in orders:
        seen.append((time.time(), order.product, order.quantity))

@app.timer(1.0)
def roll():
    cutoff = time.time() - 60
    while seen and seen[0][0] < cutoff:
        seen.pop(0)
    by_product = {}
    for _, product, quantity in seen:
        orders, units = by_product.get(product, (0, 0))
        by_product[product] = (orders + 1, units + quantity)
    for product in list(recent):
        if product not in by_product:
            del recent[product]
    for product, (orders, units) in by_product.items():
        recent[product] = {'orders': orders, 'units': units}
"#,
    },
    Template {
        id: "blank",
        title: "Blank app",
        code: r#"import aerogrid

app = aerogrid.App('myapp', broker=BROKER_URI)

events_topic = app.topic('events', key_type=str, value_type=dict)

latest = app.Grid('latest', columns=['value'])

@app.stream(events_topic)
async def keep_latest(events):
    async for key, event in events.items():
        latest[key] = {'value': str(event)}
"#,
    },
];
