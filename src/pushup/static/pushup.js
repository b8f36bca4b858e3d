// PushUp browser client: an ES module with no dependencies, served by PushUp at /pushup.js.
//
//   import { subscribe } from "/pushup.js";
//   const handle = subscribe({ channels: ["room:lobby"], onMessage: (m) => show(m.data) });
//   handle.stop();
//   const who = await presence("room:lobby");  // { connections, subs, sub_count, ... }
//
// It keeps the cursor, so nothing published between two polls is missed and nothing is
// seen twice; re-polls at once after each answer; backs off with jitter (capped) on
// errors. Tabs of one origin subscribed to the same channels share one connection: the
// tab holding a Web Lock leads, polls, and relays each answer to the others over a
// BroadcastChannel; when it closes, the next tab takes the lock and goes on from the
// last cursor it saw. Every tab drops messages at or below its own cursor, so a relay
// arriving late, or an answer fetched twice around a change of leader, shows nothing
// twice. See docs/client-js.md.

const DEFAULTS = {
  baseUrl: "",
  transport: "longpoll",
  timeout: 50, // seconds a long poll waits on the server
  backoffBase: 500, // ms before the first retry after an error
  backoffMax: 30000, // ms: the cap of the exponential backoff
  share: true, // share one connection among this origin's tabs
  token: null, // subscriber token (JWT), or a function returning one or a promise of one
};

// Milliseconds a request may take beyond its own timeout before it is taken for lost
// (a dead network can hold a request open forever without an error).
const GRACE_MS = 15000;

/** Subscribe to channels; returns a handle with stop() and the current cursor. */
export function subscribe(options) {
  const sub = new Subscription({ ...DEFAULTS, ...options });
  sub.start();
  return {
    stop: () => sub.stop(),
    get cursor() {
      return sub.cursor;
    },
    get channels() {
      return [...sub.channels];
    },
    /** "leader" (this tab holds the connection), "follower" or "stopped". */
    get role() {
      return sub.role;
    },
    /** The transport in use: "longpoll", "sse" or "ws" (after a fallback, "longpoll"). */
    get transport() {
      return sub.transport;
    },
  };
}

/**
 * Who is on a channel now: its parked polls and open streams over every node, and the
 * distinct `sub` claims of their tokens (GET /channels/{id}/presence). Options:
 * `baseUrl`, and `token` (a subscriber token granting the channel, or a function giving
 * one) when the server has a subscriber secret. Rejects with an ApiError (`status`,
 * `code`) on an error answer.
 */
export async function presence(channel, options = {}) {
  const { baseUrl, token } = { ...DEFAULTS, ...options };
  const base = new URL(baseUrl || "/", location.href);
  const url = new URL(`channels/${encodeURIComponent(String(channel))}/presence`, base);
  const bearer = typeof token === "function" ? await token() : token;
  // In the query, as a poll sends it: a simple request needs no CORS preflight.
  if (bearer) url.search = new URLSearchParams({ token: bearer }).toString();
  const response = await fetch(url, { cache: "no-store", credentials: "same-origin" });
  const body = await response.json().catch(() => null);
  if (!response.ok || !body) throw new ApiError(response.status, body);
  return body;
}

/** True when cursor or message id `a` comes after `b` (ids are decimal strings). */
export function isAfter(a, b) {
  if (b === null || b === undefined) return true;
  if (a === null || a === undefined) return false;
  const sa = String(a);
  const sb = String(b);
  if (!/^\d+$/.test(sa) || !/^\d+$/.test(sb)) return sa !== sb;
  return sa.length !== sb.length ? sa.length > sb.length : sa > sb;
}

class ApiError extends Error {
  constructor(status, body) {
    super((body && body.detail) || `HTTP ${status}`);
    this.status = status;
    this.code = body && body.error;
    this.body = body;
  }
}

class Subscription {
  constructor(options) {
    if (!options.channels || options.channels.length === 0) {
      throw new TypeError("subscribe() needs at least one channel");
    }
    if (typeof options.onMessage !== "function") {
      throw new TypeError("subscribe() needs an onMessage callback");
    }
    this.options = options;
    this.channels = options.channels.map(String);
    this.transport = options.transport;
    this.base = new URL(options.baseUrl || "/", location.href);
    this.cursorKey = options.cursorKey || null;
    this.cursor = options.since ?? this._storedCursor();
    this.role = "starting";
    this.stopped = false;
    this.failures = 0;
    this.inflight = null; // AbortController of the request or stream in progress
    this.sleeping = null; // {timer, resolve} of a backoff in progress
    this.channel = null; // BroadcastChannel to the other tabs
    this.lockAbort = null;
    this.releaseLock = null;
    this.buffered = null; // relays that came while this tab was catching up
  }

  start() {
    const key = this._shareKey();
    if (!this.options.share || !key) {
      this._lead();
      return;
    }
    this.channel = new BroadcastChannel(key);
    this.channel.onmessage = (event) => this._onRelay(event.data);
    this.buffered = [];
    this.lockAbort = new AbortController();
    this._requestLead(key, { ifAvailable: true }).then(() => {
      if (this.releaseLock || this.stopped) return; // it led, and has stopped
      // Another tab leads: catch up from this tab's own cursor, then follow its relays,
      // waiting in line to lead.
      this.role = "follower";
      this._status();
      this._catchUp().then(() => {
        if (this.stopped) return;
        this._requestLead(key, { signal: this.lockAbort.signal }).catch(() => {}); // stop()
      });
    });
  }

  /** Ask for the lock; once granted, lead until stop() releases it (or the tab dies). */
  _requestLead(key, options) {
    return navigator.locks.request(key, options, (lock) => {
      if (!lock || this.stopped) return null;
      this.buffered = null;
      return new Promise((resolve) => {
        this.releaseLock = resolve;
        this._lead();
      });
    });
  }

  stop() {
    if (this.stopped) return;
    this.stopped = true;
    this.role = "stopped";
    if (this.inflight) this.inflight.abort();
    if (this.sleeping) {
      clearTimeout(this.sleeping.timer);
      this.sleeping.resolve();
    }
    if (this.lockAbort) this.lockAbort.abort();
    if (this.releaseLock) this.releaseLock();
    if (this.channel) this.channel.close();
    this._status();
  }

  // -- shared connection --------------------------------------------------------------

  _shareKey() {
    if (typeof BroadcastChannel !== "function" || !navigator.locks) return null;
    const channels = [...this.channels].sort().join(",");
    return `pushup:${this.base.href}|${channels}`;
  }

  _relay(message) {
    if (this.channel) this.channel.postMessage(message);
  }

  _onRelay(message) {
    if (this.stopped || this.role === "leader") return;
    if (this.buffered) {
      this.buffered.push(message);
      return;
    }
    if (message.type === "answer") this._receive(message.answer);
    else if (message.type === "closed") this._closed(message.channels);
  }

  async _catchUp() {
    // One poll that answers at once: what this tab missed before it listened to the
    // relays, which are buffered meanwhile and replayed after it.
    for (;;) {
      if (this.stopped) return;
      const result = await this._fetchPoll(0);
      if (result === "retry") continue;
      break;
    }
    const buffered = this.buffered || [];
    this.buffered = null;
    for (const message of buffered) this._onRelay(message);
  }

  // -- leading: the connection itself -------------------------------------------------

  _lead() {
    if (this.stopped) return;
    this.role = "leader";
    this._status();
    const run = {
      sse: () => this._runSse(),
      ws: () => this._runWebSocket(),
    }[this.transport];
    (run ? run() : this._runLongPoll()).catch((error) => this._error(error));
  }

  async _runLongPoll() {
    this.transport = "longpoll";
    while (!this.stopped) {
      await this._fetchPoll(this.options.timeout);
    }
  }

  /** One long poll; returns "ok", "retry" (after its backoff) or "stop". */
  async _fetchPoll(timeout) {
    let token;
    try {
      token = await this._token();
    } catch (error) {
      if (this.stopped) return "stop";
      return this._retryAfter(error);
    }
    if (this.stopped) return "stop";
    const url = new URL("subscribe", this.base);
    url.search = this._query({ timeout: String(timeout), ...(token ? { token } : {}) });
    const abort = new AbortController();
    this.inflight = abort;
    const watchdog = setTimeout(() => abort.abort(), timeout * 1000 + GRACE_MS);
    let response;
    let body;
    try {
      response = await fetch(url, {
        signal: abort.signal,
        cache: "no-store",
        credentials: "same-origin",
      });
      body = await response.json().catch(() => null);
    } catch (error) {
      if (this.stopped) return "stop";
      return this._retryAfter(error);
    } finally {
      clearTimeout(watchdog);
      if (this.inflight === abort) this.inflight = null;
    }
    if (this.stopped) return "stop";
    if (response.ok && body) {
      this.failures = 0;
      this._answer(body);
      return "ok";
    }
    const error = new ApiError(response.status, body);
    if (error.code === "channel_closed" || error.code === "channel_not_found") {
      this._lostChannels(error);
      return this.stopped ? "stop" : "ok";
    }
    if (error.code === "invalid_cursor") {
      // Not a cursor this server issued (a stored one from elsewhere): start afresh.
      this.cursor = null;
      this._error(error);
      return "ok";
    }
    if (response.status === 401 && typeof this.options.token === "function") {
      // An expired token, most likely: the function gives a fresh one next time.
      return this._retryAfter(error);
    }
    if (response.status >= 400 && response.status < 500 && response.status !== 429) {
      // A request that the server refuses will be refused again.
      this._error(error);
      this.stop();
      return "stop";
    }
    return this._retryAfter(error);
  }

  /** The subscriber token for the next request or stream, if any. */
  async _token() {
    const token = this.options.token;
    return typeof token === "function" ? await token() : token;
  }

  _query(extra) {
    const params = [`channels=${this.channels.map(encodeURIComponent).join(",")}`];
    if (this.cursor !== null && this.cursor !== undefined) {
      params.push(`since=${encodeURIComponent(this.cursor)}`);
    } else if (this.options.last) {
      // Only before the first answer: from then on the cursor says where to go on.
      params.push(`last=${encodeURIComponent(this.options.last)}`);
    }
    for (const [name, value] of Object.entries(extra)) {
      params.push(`${name}=${encodeURIComponent(value)}`);
    }
    return params.join("&");
  }

  async _retryAfter(error) {
    this._error(error);
    this.failures += 1;
    // Full exponential step, then a random half of it off: tabs and clients that failed
    // together (a server restart) come back spread out, not in one wave.
    const step = Math.min(
      this.options.backoffMax,
      this.options.backoffBase * 2 ** Math.min(this.failures - 1, 20),
    );
    const delay = step / 2 + Math.random() * (step / 2);
    await new Promise((resolve) => {
      this.sleeping = { timer: setTimeout(resolve, delay), resolve };
    });
    this.sleeping = null;
    return "retry";
  }

  /** A poll's answer (or the same shape from another transport), here and to the others. */
  _answer(answer) {
    this._receive(answer);
    if (this.role === "leader") this._relay({ type: "answer", answer });
  }

  _lostChannels(error) {
    // 410 names closed channels by id, 404 names unknown ones as given: drop those this
    // subscription lists. A 410 for channels given by name matches none of them, and
    // the next poll gets the 404 that names them.
    const lost = (error.body && error.body.channels) || [];
    this._closed(lost.map(String));
    if (this.role === "leader") this._relay({ type: "closed", channels: lost.map(String) });
  }

  // -- every tab: delivering --------------------------------------------------------

  _receive(answer) {
    if (answer.gap && typeof this.options.onGap === "function") {
      this.options.onGap({ cursor: this.cursor });
    }
    for (const message of answer.messages || []) {
      if (!isAfter(message.id, this.cursor)) continue;
      this.cursor = message.id;
      this._call(this.options.onMessage, message);
      if (this.stopped) return;
    }
    if (isAfter(answer.cursor, this.cursor)) this.cursor = answer.cursor;
    this._storeCursor();
  }

  _closed(lost) {
    const gone = this.channels.filter((channel) => lost.includes(channel));
    if (gone.length === 0) return;
    this.channels = this.channels.filter((channel) => !gone.includes(channel));
    this._call(this.options.onClosed, gone, [...this.channels]);
    if (this.channels.length === 0) this.stop();
  }

  _error(error) {
    this._call(this.options.onError, error);
  }

  _status() {
    this._call(this.options.onStatus, { role: this.role, transport: this.transport });
  }

  _call(callback, ...args) {
    if (typeof callback !== "function") return;
    try {
      callback(...args);
    } catch (error) {
      // A failing callback must not stop the subscription; report it as the browser would.
      setTimeout(() => {
        throw error;
      });
    }
  }

  _storedCursor() {
    if (!this.cursorKey) return null;
    try {
      return sessionStorage.getItem(this.cursorKey);
    } catch {
      return null;
    }
  }

  _storeCursor() {
    if (!this.cursorKey || this.cursor === null) return;
    try {
      sessionStorage.setItem(this.cursorKey, this.cursor);
    } catch {
      // Storage full or disabled: the subscription goes on, only a reload forgets.
    }
  }

  // -- streaming transports, with a fallback to long polling --------------------------

  _runSse() {
    return this._runStream((handlers, token) => {
      const url = new URL("subscribe/sse", this.base);
      url.search = this._query(token ? { token } : {});
      const source = new EventSource(url);
      source.onopen = handlers.open;
      source.onmessage = (event) => handlers.message(JSON.parse(event.data));
      source.addEventListener("gap", () => handlers.gap());
      source.addEventListener("closed", (event) => {
        source.close();
        handlers.closed(JSON.parse(event.data));
      });
      // EventSource would reconnect by itself, from the same URL; closing it here lets
      // the next connection start from the cursor, after this client's own backoff.
      source.onerror = () => {
        source.close();
        handlers.lost();
      };
      return () => source.close();
    });
  }

  _runWebSocket() {
    return this._runStream((handlers, token) => {
      const url = new URL("subscribe/ws", this.base);
      url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
      url.search = this._query(token ? { token } : {});
      const socket = new WebSocket(url);
      let closedBody = null;
      socket.onopen = handlers.open;
      socket.onmessage = (event) => {
        const frame = JSON.parse(event.data);
        if (frame.error) {
          // The 410 body comes before close code 4410. An expired token's body comes
          // before 4401: that stream is lost, and made again with a fresh token.
          if (frame.error === "channel_closed") closedBody = frame;
        } else if (frame.gap && !frame.id) handlers.gap();
        else handlers.message(frame);
      };
      socket.onclose = () => {
        if (closedBody) handlers.closed(closedBody);
        else handlers.lost();
      };
      return () => socket.close();
    });
  }

  /**
   * Run a streaming transport until stopped; resolves when it gives up for long polling.
   * A stream that fails before it opens is checked with a poll that answers at once: if
   * that poll names lost channels or cannot reach the server, the stream is tried again
   * (after the poll's backoff). If the poll works, the stream is tried once more (the
   * server may just have come back); when it fails again while polls work, the server
   * or a proxy does not stream, and this subscription long-polls from then on.
   */
  _runStream(connect) {
    return new Promise((resolve) => {
      let close = null;
      let refused = 0; // streams that failed to open in a row while polls worked
      // Each connection asks for the token anew: a token function may give a fresh one.
      const start = () => {
        if (this.stopped) return resolve();
        this._token().then(begin, (error) => this._retryAfter(error).then(start));
      };
      const begin = (token) => {
        if (this.stopped) return resolve();
        let open = false;
        let ended = false;
        const end = () => {
          if (ended || this.stopped) return false;
          ended = true;
          return true;
        };
        close = connect({
          open: () => {
            open = true;
            refused = 0;
            this.failures = 0;
          },
          message: (message) => this._answer({ messages: [message], cursor: null, gap: false }),
          gap: () => this._answer({ messages: [], cursor: null, gap: true }),
          closed: (body) => {
            if (!end()) return;
            this._lostChannels(new ApiError(410, body));
            start();
          },
          lost: () => {
            if (!end()) return;
            if (open) {
              this._retryAfter(new Error(`the ${this.transport} stream was lost`)).then(start);
              return;
            }
            const before = this.channels.length;
            this._fetchPoll(0).then((result) => {
              if (this.stopped) return resolve();
              if (result === "retry" || this.channels.length < before) return start();
              refused += 1;
              if (refused < 2) return start();
              resolve();
              this._fallBack(new Error(`the ${this.transport} transport failed`));
            });
          },
        }, token);
        this.inflight = { abort: () => close() };
      };
      start();
    });
  }

  _fallBack(error) {
    this._error(error);
    this.transport = "longpoll";
    this._status();
    this._runLongPoll().catch((failure) => this._error(failure));
  }
}
