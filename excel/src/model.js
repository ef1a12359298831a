// A grid as the add-in holds it: the snapshot, then each message's changes applied. The same
// model as the Rust clients' (`aerogrid_proto::model::GridModel`): `excel/test/grpcweb.test.mjs`
// applies a stream prost encoded and checks the grid the Rust model made of it.

/**
 * One grid as a subscriber sees it: `columns`, and `rows` (key -> one value per column).
 * `apply` takes each `SubscribeResponse` and tells what changed.
 */
export class GridModel {
  constructor() {
    /** @type {string[]} */
    this.columns = [];
    /** @type {Map<string, any[]>} */
    this.rows = new Map();
    this.sequence = 0;
    /** Whether a snapshot has arrived. */
    this.ready = false;
  }

  /**
   * Applies one message. Returns `{snapshot: true}` after a snapshot (everything may have
   * changed), `{keys: Set<string>}` with the rows changes touched (updated or deleted), or `null`
   * for a heartbeat.
   */
  apply(message) {
    if (message.snapshot) {
      const snapshot = message.snapshot;
      this.columns = snapshot.columns.slice();
      this.rows = new Map();
      for (const row of snapshot.rows) {
        const values = new Array(this.columns.length).fill(null);
        for (let i = 0; i < values.length && i < row.values.length; i++) values[i] = row.values[i];
        this.rows.set(row.key, values);
      }
      this.sequence = snapshot.sequence;
      this.ready = true;
      return { snapshot: true };
    }
    if (message.changes) {
      const keys = new Set();
      for (const change of message.changes.rows) {
        keys.add(change.key);
        if (change.deleted) {
          this.rows.delete(change.key);
          continue;
        }
        if (!change.updated) continue;
        let values = this.rows.get(change.key);
        if (!values) {
          values = new Array(this.columns.length).fill(null);
          this.rows.set(change.key, values);
        }
        const { columns, values: updated } = change.updated;
        for (let i = 0; i < columns.length && i < updated.length; i++) {
          if (columns[i] < values.length) values[columns[i]] = updated[i];
        }
      }
      this.sequence = message.changes.sequence;
      return { keys };
    }
    if (message.heartbeat) {
      this.sequence = message.heartbeat.sequence;
    }
    return null;
  }

  /** The value of one cell, or undefined when the row or column is missing. */
  get(key, column) {
    const index = this.columns.indexOf(column);
    const values = this.rows.get(key);
    if (index < 0 || !values) return undefined;
    return values[index];
  }

  /** Row keys in order (by UTF-16 code unit, like the web preview's sort by key). */
  sortedKeys() {
    return Array.from(this.rows.keys()).sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  }
}
