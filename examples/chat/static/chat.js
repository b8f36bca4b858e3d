// The chat page: joins a room through the app, then receives every post through PushUp
// with /pushup.js. The transcript and the cursor live in sessionStorage, so a reload
// shows what was there and catches up from the cursor: nothing missed, nothing twice.
import { subscribe } from "/pushup.js";

const $ = (selector) => document.querySelector(selector);
const params = new URLSearchParams(location.search);
const transport = params.get("transport") || "longpoll";

let name = params.get("name") || sessionStorage.getItem("chat:name") || "";
let room = params.get("room") || "";
let rooms = [];
let handle = null;
let transcript = [];
let seen = new Set();
let enteredAt = 0;
const unread = {};

const logKey = () => `chat:${name}:${room}:log`;
const cursorKey = () => `chat:${name}:${room}:cursor`;

async function api(path, body) {
  const response = await fetch(path, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
  const answer = await response.json();
  if (!response.ok) throw new Error(answer.detail || `HTTP ${response.status}`);
  return answer;
}

async function enter(next) {
  if (handle) handle.stop();
  room = next;
  sessionStorage.setItem("chat:name", name);
  history.replaceState(null, "", `?${new URLSearchParams({ name, room, transport })}`);
  const joined = await api("/api/join", { room, name });
  rooms = joined.rooms;
  unread[room] = 0;
  enteredAt = Date.now() / 1000;
  transcript = JSON.parse(sessionStorage.getItem(logKey()) || "[]");
  seen = new Set(transcript.map((note) => note.uid));
  $("#join").hidden = true;
  $("#chat").hidden = false;
  $("#me").textContent = name;
  $("#room-title").textContent = `# ${room}`;
  $("#log").replaceChildren(...transcript.map(line));
  renderRooms();
  handle = subscribe({
    channels: joined.channels,
    transport,
    cursorKey: cursorKey(),
    onMessage: receive,
    onGap: () => note("Some older messages are no longer cached."),
    onStatus: status,
    onClosed: () => note("This room was closed."),
  });
  window.chatHandle = handle; // for the browser tests
  $("#text").focus();
}

function receive(message) {
  const data = message.data;
  if (!data || seen.has(data.uid)) return;
  if (data.room !== room) {
    // Another room of ours, heard on this user's own channel (its history, cached
    // before this room was entered, is not news).
    if (data.kind === "chat" && data.sent >= enteredAt) {
      unread[data.room] = (unread[data.room] || 0) + 1;
    }
    if (!rooms.includes(data.room)) rooms.push(data.room);
    renderRooms();
    return;
  }
  seen.add(data.uid);
  transcript.push(data);
  sessionStorage.setItem(logKey(), JSON.stringify(transcript));
  const log = $("#log");
  log.append(line(data));
  log.lastElementChild.scrollIntoView({ block: "end" });
}

function line(data) {
  const item = document.createElement("li");
  item.className = data.kind;
  const when = new Date(data.sent * 1000).toLocaleTimeString([], {
    hour: "2-digit",
    minute: "2-digit",
  });
  const time = Object.assign(document.createElement("time"), { textContent: when });
  const who = Object.assign(document.createElement("b"), { textContent: data.from });
  const text = document.createElement("span");
  text.textContent = data.kind === "join" ? "joined the room" : data.text;
  item.append(time, who, text);
  return item;
}

function note(text) {
  const item = Object.assign(document.createElement("li"), { className: "note", textContent: text });
  $("#log").append(item);
}

function renderRooms() {
  $("#rooms").replaceChildren(
    ...rooms.map((each) => {
      const item = document.createElement("li");
      const link = Object.assign(document.createElement("a"), {
        href: `?${new URLSearchParams({ name, room: each, transport })}`,
        textContent: `# ${each}`,
      });
      link.addEventListener("click", (event) => {
        event.preventDefault();
        enter(each);
      });
      item.append(link);
      if (each === room) item.className = "current";
      if (unread[each]) {
        item.append(Object.assign(document.createElement("span"), {
          className: "unread",
          textContent: unread[each],
        }));
      }
      return item;
    }),
  );
}

function status({ role, transport: used }) {
  const element = $("#status");
  element.dataset.role = role;
  element.dataset.transport = used;
  element.textContent = role === "stopped" ? "offline" : `${used} · ${role}`;
}

$("#join").addEventListener("submit", (event) => {
  event.preventDefault();
  name = $("#name").value;
  enter($("#room").value);
});

$("#add-room").addEventListener("submit", (event) => {
  event.preventDefault();
  const next = $("#new-room").value;
  $("#new-room").value = "";
  enter(next);
});

$("#compose").addEventListener("submit", async (event) => {
  event.preventDefault();
  const input = $("#text");
  const text = input.value;
  input.value = "";
  try {
    await api("/api/messages", { room, name, text });
  } catch (error) {
    input.value = text;
    note(`Not sent: ${error.message}`);
  }
});

if (name && room) {
  enter(room);
} else {
  $("#name").value = name;
  $("#join").hidden = false;
}
