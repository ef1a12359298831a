import aerogrid

app = aerogrid.App('ordersapp', broker=BROKER_URI)

class Order(aerogrid.Record):
    product: str
    quantity: int

orders_topic = app.topic('orders', key_type=str, value_type=Order)

product_sum = app.Grid('product_sum', columns=['units_sold'],
                       default=lambda: {'units_sold': 0})

@app.stream(orders_topic)
async def sum_orders(orders):
    async for order_id, order in orders.items():
        units_sold = product_sum[order.product]['units_sold'] + order.quantity
        product_sum[order.product] = { 'units_sold': units_sold }
