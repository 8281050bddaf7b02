/** The two databases of the example: orders in one, stock in the other. */
export const ORDERS_SQL = `
  CREATE TABLE orders (id serial PRIMARY KEY, sku text NOT NULL, quantity int NOT NULL CHECK (quantity > 0) CONSTRAINT at_most_5_per_order CHECK (quantity <= 5), placed_at timestamptz NOT NULL DEFAULT now());
`;
export const INVENTORY_SQL = `
  CREATE TABLE items (sku text PRIMARY KEY, stock int NOT NULL CHECK (stock >= 0));
  INSERT INTO items VALUES ('apple', 10), ('pear', 3);
`;

export interface OrdersDB {
  orders: { id: number; sku: string; quantity: number; placed_at: Date };
}

export interface InventoryDB {
  items: { sku: string; stock: number };
}
