// The Slack playground page: a Slack-like client for devtools/playground.py.
//
// It loads the workspace from GET /api/state, follows every change LocalSlack reports over
// the Server-Sent Events of GET /api/events (the first event is a full snapshot, so a
// reconnect resynchronises), and sends what the user types to POST /api/messages,
// /api/commands and /api/shortcuts, and the buttons they click to POST /api/action, which
// deliver it to the bot as Slack would. Attached files go to POST /api/upload first, and the
// message names them by id. The assistant side panel opens threads in the user's DM with the
// app through POST /api/assistant/open (and /api/assistant/context as the main view moves);
// the app's Home tab goes through POST /api/home/open and /api/home/action.
"use strict";

(() => {
  // ---- Markdown --------------------------------------------------------------------------
  // A small renderer for the bot's Markdown and Slack's mrkdwn. Every piece of input text is
  // HTML-escaped before it reaches the page; only markup built here is ever unescaped.

  const EMOJI = {
    warning: "⚠️", white_check_mark: "✅", heavy_check_mark: "✔️", x: "❌", wave: "👋",
    tada: "🎉", thumbsup: "👍", "+1": "👍", thumbsdown: "👎", eyes: "👀", memo: "📝",
    bulb: "💡", rocket: "🚀", hourglass: "⌛", hourglass_flowing_sand: "⏳", robot_face: "🤖",
    smile: "😄", slightly_smiling_face: "🙂", thinking_face: "🤔", information_source: "ℹ️",
    no_entry: "⛔", lock: "🔒", sparkles: "✨", fire: "🔥", heart: "❤️", pray: "🙏",
  };

  function escapeHtml(text) {
    return String(text)
      .replace(/&/g, "&amp;")
      .replace(/</g, "&lt;")
      .replace(/>/g, "&gt;")
      .replace(/"/g, "&quot;")
      .replace(/'/g, "&#39;");
  }

  function linkHtml(url, labelHtml) {
    return `<a href="${escapeHtml(url)}" target="_blank" rel="noopener noreferrer">${labelHtml}</a>`;
  }

  // Inline formatting of one line (or one list item). `mrkdwn`: Slack's flavour, where
  // *single stars* are bold and ~single tildes~ strike through.
  function renderInline(raw, ctx) {
    const held = [];
    // Placeholders keep finished HTML away from the later passes; NUL cannot be typed.
    const hold = (html) => `\u0000${held.push(html) - 1}\u0000`;
    let s = String(raw).replace(/\u0000/g, "");

    s = s.replace(/```([^`]+?)```|`([^`\n]+)`/g,
      (_, triple, single) => hold(`<code>${escapeHtml(triple ?? single)}</code>`));
    // A date Slack formats in the reader's time zone; its fallback text says the same.
    s = s.replace(/<!date\^\d+\^[^|<>]*\|([^<>]*)>/g, (_, fallback) => hold(escapeHtml(fallback)));
    // Slack's angle-bracket tokens: <@U123>, <#C123|name>, <!here>, <https://…|label>.
    s = s.replace(/<([@#!]?)([^<>\s|]+)(?:\|([^<>]*))?>/g, (match, sigil, target, label) => {
      if (sigil === "@") {
        const mine = target === ctx.me ? " me" : "";
        return hold(`<span class="mention${mine}">@${escapeHtml(ctx.userName(target))}</span>`);
      }
      if (sigil === "#") return hold(`<span class="mention">#${escapeHtml(label || channelName(target))}</span>`);
      if (sigil === "!") return hold(`<span class="mention">@${escapeHtml(label || target)}</span>`);
      if (/^(https?:\/\/|mailto:)/i.test(target)) {
        return hold(linkHtml(target, escapeHtml(label || target)));
      }
      return match;
    });
    // Markdown links, then bare URLs. Only http(s) and mailto are ever made into links.
    s = s.replace(/\[([^\]\n]+)\]\(((?:https?:\/\/|mailto:)[^\s)]+)\)/gi, (_, label, url) =>
      hold(linkHtml(url, escapeHtml(label))));
    s = s.replace(/\bhttps?:\/\/[^\s<>"\u0000]*[^\s<>"\u0000.,;:!?)\]']/gi, (url) =>
      hold(linkHtml(url, escapeHtml(url))));

    s = escapeHtml(s);
    s = s.replace(/\*\*(?=\S)([^\n]*?\S)\*\*/g, "<strong>$1</strong>");
    s = s.replace(/(^|[^\w])__(?=\S)([^\n]*?\S)__(?!\w)/g, "$1<strong>$2</strong>");
    const [open, close] = ctx.mrkdwn ? ["<strong>", "</strong>"] : ["<em>", "</em>"];
    s = s.replace(/(^|[^\w*])\*([^\s*](?:[^*\n]*?[^\s*])?)\*(?![\w*])/g, `$1${open}$2${close}`);
    s = s.replace(/(^|[^\w])_([^\s_](?:[^_\n]*?[^\s_])?)_(?!\w)/g, "$1<em>$2</em>");
    s = s.replace(/~~(?=\S)([^\n]*?\S)~~/g, "<del>$1</del>");
    if (ctx.mrkdwn) s = s.replace(/(^|[^\w~])~(?=\S)([^~\n]*?\S)~(?![\w~])/g, "$1<del>$2</del>");
    s = s.replace(/:([a-z0-9_+-]+):/g, (m, name) => EMOJI[name] || m);
    return s.replace(/\u0000(\d+)\u0000/g, (_, i) => held[Number(i)]);
  }

  function renderList(items, ctx) {
    let html = "";
    const open = [];  // {indent, tag}
    for (const item of items) {
      while (open.length && item.indent < open[open.length - 1].indent) {
        html += `</li></${open.pop().tag}>`;
      }
      const tag = item.ordered ? "ol" : "ul";
      if (open.length && item.indent === open[open.length - 1].indent && open[open.length - 1].tag !== tag) {
        html += `</li></${open.pop().tag}>`;  // "1." after "-" at one level: a new list
      }
      const top = open[open.length - 1];
      if (!top || item.indent > top.indent) {
        const start = item.ordered && item.number !== 1 ? ` start="${item.number}"` : "";
        html += `<${tag}${start}>`;
        open.push({ indent: item.indent, tag });
      } else {
        html += "</li>";
      }
      html += `<li>${renderInline(item.text, ctx)}`;
    }
    while (open.length) html += `</li></${open.pop().tag}>`;
    return html;
  }

  const LIST_ITEM = /^(\s*)([-*+•]|(\d{1,9})[.)])\s+(.*)$/;

  function renderMarkdown(text, ctx) {
    const lines = String(text ?? "").replace(/\r\n?/g, "\n").split("\n");
    const out = [];
    let paragraph = [];
    const flush = () => {
      if (paragraph.length) {
        out.push(`<p>${paragraph.map((l) => renderInline(l, ctx)).join("<br>")}</p>`);
        paragraph = [];
      }
    };
    let i = 0;
    while (i < lines.length) {
      const line = lines[i];
      const fence = line.match(/^\s*```(.*)$/);
      if (fence) {
        flush();
        const rest = fence[1];
        const close = rest.indexOf("```");
        if (close >= 0) {  // ```code``` on one line, as Slack allows
          out.push(`<pre><code>${escapeHtml(rest.slice(0, close))}</code></pre>`);
          if (rest.slice(close + 3).trim()) paragraph.push(rest.slice(close + 3).trim());
          i += 1;
          continue;
        }
        // A word after the fence is a language; anything else is already code (mrkdwn).
        const body = /^[\w+#.-]*$/.test(rest.trim()) ? [] : [rest];
        i += 1;
        while (i < lines.length && !/^\s*```\s*$/.test(lines[i])) {
          const end = lines[i].indexOf("```");
          if (end >= 0 && lines[i].trim().endsWith("```")) {  // mrkdwn: closes at line end
            body.push(lines[i].slice(0, end));
            break;
          }
          body.push(lines[i]);
          i += 1;
        }
        i += 1;
        out.push(`<pre><code>${escapeHtml(body.join("\n"))}</code></pre>`);
        continue;
      }
      if (!line.trim()) {
        flush();
        i += 1;
        continue;
      }
      const heading = line.match(/^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$/);
      if (heading) {
        flush();
        out.push(`<p class="heading"><strong>${renderInline(heading[2], ctx)}</strong></p>`);
        i += 1;
        continue;
      }
      if (/^\s{0,3}([-*_])(\s*\1){2,}\s*$/.test(line)) {
        flush();
        out.push("<hr>");
        i += 1;
        continue;
      }
      if (/^\s*>/.test(line)) {
        flush();
        const quoted = [];
        while (i < lines.length && /^\s*>/.test(lines[i])) {
          quoted.push(lines[i].replace(/^\s*>\s?/, ""));
          i += 1;
        }
        out.push(`<blockquote>${renderMarkdown(quoted.join("\n"), ctx)}</blockquote>`);
        continue;
      }
      if (LIST_ITEM.test(line)) {
        flush();
        const items = [];
        while (i < lines.length) {
          const item = lines[i].match(LIST_ITEM);
          if (item) {
            items.push({
              indent: item[1].replace(/\t/g, "    ").length,
              ordered: item[3] !== undefined,
              number: Number(item[3] || 1),
              text: item[4],
            });
          } else if (/^\s+\S/.test(lines[i]) && items.length) {
            items[items.length - 1].text += ` ${lines[i].trim()}`;  // a wrapped item
          } else {
            break;
          }
          i += 1;
        }
        out.push(renderList(items, ctx));
        continue;
      }
      paragraph.push(line);
      i += 1;
    }
    flush();
    return out.join("");
  }

  // ---- State -----------------------------------------------------------------------------

  const state = {
    config: null,            // the workspace, from /api/state
    messages: new Map(),     // channel id -> Map(ts -> message)
    ephemerals: [],
    statuses: new Map(),     // "channel/thread_ts" -> status text
    sessions: new Map(),     // "channel/thread_ts" -> agent session status
    notices: [],             // the page's own "only visible to you" notes
    user: null,
    channel: null,
    thread: null,            // {channel, ts} of the open thread
    menu: null,              // "where/ts" of the open message menu
    highlight: null,         // ts of a message reached through a link
    clicking: new Set(),     // "channel/ts/action_id" of button clicks not yet acked
    unread: new Set(),
    // Files chosen in each composer, not sent yet: [{key, file, preview}].
    attachments: { channel: [], thread: [], assistant: [] },
    // The assistant side panel: whose it is and the thread it shows (ts null while opening).
    assistant: { open: false, user: null, channel: null, ts: null, error: null },
    assistantThreads: new Map(),  // "channel/thread_ts" -> {user, channel, thread_ts, context_channel}
    titles: new Map(),            // "channel/thread_ts" -> title
    prompts: new Map(),           // "channel/thread_ts" -> {title, prompts, after: ts}
    homeViews: new Map(),         // user id -> published Home view
    home: false,                  // the main pane shows the app's Home tab
    homeOpening: false,
    homeError: null,         // why the last Home request failed, shown in the tab
  };

  const $ = (selector) => document.querySelector(selector);
  const tsNumber = (ts) => Number.parseFloat(ts);
  // Exact ts order (a double cannot hold every microsecond of "1700000000.000100"); the
  // page's own notices sort just after the message that was last when they were made.
  function byTs(a, b) {
    const [aSeconds, aMicros] = tsParts(a.ts);
    const [bSeconds, bMicros] = tsParts(b.ts);
    return aSeconds - bSeconds || aMicros - bMicros || (a.after ? 1 : 0) - (b.after ? 1 : 0);
  }
  function tsParts(ts) {
    const [seconds, fraction = ""] = String(ts).split(".");
    return [Number(seconds), Number(fraction.padEnd(6, "0").slice(0, 6))];
  }

  // A known channel's name, for <#C123> sent without one (as apps often do).
  function channelName(id) {
    const known = state.config && state.config.channels.find((c) => c.id === id);
    return known ? known.name : id;
  }

  function userName(id) {
    const user = state.config && state.config.users.find((u) => u.id === id);
    return user ? user.name : id;
  }

  // People's avatar colours; green is the app's.
  const COLORS = ["#4a154b", "#1264a3", "#e01e5a", "#e8912d", "#36c5f0", "#9c27b0", "#5b6abf"];

  // Icons are inline SVG rather than emoji: a headless or minimal system may have no emoji font.
  const ICONS = {
    reply: '<svg viewBox="0 0 20 20" width="16" height="16" aria-hidden="true"><path fill="none" ' +
      'stroke="currentColor" stroke-width="1.6" stroke-linejoin="round" d="M3 4.5h14v9H8l-4 3v-3H3z"/></svg>',
    eye: '<svg viewBox="0 0 20 20" width="14" height="14" aria-hidden="true"><path fill="none" ' +
      'stroke="currentColor" stroke-width="1.6" d="M1.5 10S5 4.5 10 4.5 18.5 10 18.5 10 15 15.5 10 ' +
      '15.5 1.5 10 1.5 10z"/><circle cx="10" cy="10" r="2.5" fill="currentColor"/></svg>',
  };
  function colorFor(id) {
    let hash = 0;
    for (const ch of String(id)) hash = (hash * 31 + ch.charCodeAt(0)) >>> 0;
    return COLORS[hash % COLORS.length];
  }

  function channelMessages(channel) {
    if (!state.messages.has(channel)) state.messages.set(channel, new Map());
    return state.messages.get(channel);
  }

  function store(channel, message) {
    channelMessages(channel).set(message.ts, message);
  }

  function applySnapshot(snapshot) {
    state.config = snapshot;
    state.messages = new Map();
    for (const [channel, messages] of Object.entries(snapshot.messages)) {
      for (const message of messages) store(channel, message);
    }
    state.ephemerals = snapshot.ephemerals.slice();
    state.statuses = new Map(Object.entries(snapshot.statuses));
    state.sessions = new Map(Object.entries(snapshot.sessions || {}));
    state.assistantThreads = new Map(
      (snapshot.assistant_threads || []).map((t) => [`${t.channel}/${t.thread_ts}`, t]));
    state.titles = new Map(Object.entries(snapshot.titles || {}));
    // When prompts were set is not kept; from the thread's start, they go once the user writes.
    state.prompts = new Map(Object.entries(snapshot.suggested_prompts || {}).map(
      ([key, entry]) => [key, { ...entry, after: key.slice(key.indexOf("/") + 1) }]));
    state.homeViews = new Map(Object.entries(snapshot.home_views || {}));
    const panel = state.assistant;
    if (panel.ts && !state.assistantThreads.has(`${panel.channel}/${panel.ts}`)) {
      closeAssistant();  // a restarted playground knows nothing of it
    }
    const humans = snapshot.users.filter((u) => !u.is_bot);
    if (!state.user || !humans.some((u) => u.id === state.user)) state.user = humans[0].id;
    if (!state.channel || !isKnownChannel(state.channel)) state.channel = snapshot.channels[0].id;
    setup();
  }

  function isKnownChannel(channel) {
    const config = state.config;
    return config.channels.some((c) => c.id === channel) || Object.values(config.dms).includes(channel);
  }

  function applyEvent(event) {
    const channel = event.channel;
    switch (event.type) {
      case "snapshot":
        applySnapshot(event.state);
        break;
      case "message": {
        const message = { ...event.message, streaming: Boolean(event.streaming) };
        store(channel, message);
        if (message.bot_id && message.thread_ts) {
          // Slack clears an app's thread status when the app replies in the thread.
          state.statuses.delete(`${channel}/${message.thread_ts}`);
        }
        // What lands in the open panel is seen there, even before the panel knows its ts.
        const inPanel = state.assistant.open && channel === state.assistant.channel &&
          state.assistantThreads.has(`${channel}/${message.thread_ts || message.ts}`);
        if (channel !== state.channel && message.user !== state.user && !inPanel) state.unread.add(channel);
        break;
      }
      case "message_changed": {
        const previous = channelMessages(channel).get(event.message.ts);
        store(channel, { ...event.message, streaming: Boolean(previous && previous.streaming) });
        break;
      }
      case "message_deleted":
        channelMessages(channel).delete(event.previous_message.ts);
        break;
      case "stream_append":
        store(channel, { ...event.message, streaming: true });
        break;
      case "stream_stop":
        store(channel, { ...event.message, streaming: false });
        break;
      case "ephemeral": {
        const { type, ...ephemeral } = event;
        state.ephemerals.push(ephemeral);
        break;
      }
      case "status":
        state.statuses.set(`${channel}/${event.thread_ts}`, event.status);
        break;
      case "session":
        state.sessions.set(`${channel}/${event.thread_ts}`, event.status);
        break;
      case "session_title":
        state.titles.set(`${channel}/${event.thread_ts}`, event.title);
        break;
      case "suggested_prompts":
        state.prompts.set(`${channel}/${event.thread_ts}`, {
          title: event.title, prompts: event.prompts, after: latestTs(channel, event.thread_ts),
        });
        break;
      case "title":
        state.titles.set(`${channel}/${event.thread_ts}`, event.title);
        break;
      case "home":
        state.homeViews.set(event.user, event.view);
        break;
      case "assistant_thread": {
        const { type, ...thread } = event;
        state.assistantThreads.set(`${thread.channel}/${thread.thread_ts}`, thread);
        break;
      }
      default:
        return;
    }
    scheduleRender();
  }

  // The ts of a thread's newest message (the root's when it has no replies).
  function latestTs(channel, threadTs) {
    const replies = repliesOf(channel, threadTs);
    return replies.length ? replies[replies.length - 1].ts : threadTs;
  }

  function notice(text, threadTs, channel = state.channel) {
    // LocalSlack's ts values run on their own clock, so a notice takes its place from them.
    const known = [
      ...channelMessages(channel).values(),
      ...state.ephemerals.map((e) => ({ ts: e.message_ts })),
    ].sort(byTs);
    const ts = known.length ? known[known.length - 1].ts : (Date.now() / 1000).toFixed(6);
    state.notices.push({
      channel, user: state.user, thread_ts: threadTs || null, ts, text, after: true,
    });
    scheduleRender();
  }

  // ---- Talking to the playground ---------------------------------------------------------

  async function api(path, body) {
    try {
      const response = await fetch(path, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify(body),
      });
      return await response.json();
    } catch (err) {
      return { ok: false, error: "playground_unreachable" };
    }
  }

  function explainFailure(result, what) {
    if (result.error === "bot_unreachable") {
      return `:warning: The bot at ${state.config.bot_events_url} did not answer. Is it running?`;
    }
    if (result.error === "playground_unreachable") {
      return ":warning: The playground server is not answering. Is `threadchat dev` still running?";
    }
    const failed = (result.deliveries || []).filter((d) => d.status < 200 || d.status >= 300);
    if (failed.length) {
      const list = failed.map((d) => `\`${d.event}\` → HTTP ${d.status}`).join(", ");
      return `:warning: The bot refused ${what}: ${list}.`;
    }
    if (result.status) return `:warning: The bot answered ${what} with HTTP ${result.status}.`;
    return `:warning: Could not send ${what}: \`${result.error}\`.`;
  }

  const COMMAND = /^(\/\S+)(?:\s+([\s\S]*))?$/;

  // The channel and thread a composer writes to: the assistant panel's is a thread in the
  // user's DM with the app, whatever the main pane shows.
  function composerTarget(where) {
    if (where === "assistant") return { channel: state.assistant.channel, threadTs: state.assistant.ts };
    return { channel: state.channel, threadTs: where === "thread" && state.thread ? state.thread.ts : null };
  }

  async function send(where, text, attachments) {
    // Where and as whom it was sent, even if the user switches while files upload.
    const { channel, threadTs } = composerTarget(where);
    const { user } = state;
    const command = attachments.length ? null : text.trim().match(COMMAND);
    if (command) {
      const [, name, argument] = command;
      if (threadTs) {
        notice(`\`${name}\` is not supported in threads. Sorry! Slack runs slash commands only ` +
          "in the channel: type it there, or use ⋮ *More actions* → *End chat* on a message " +
          "in this thread.", threadTs, channel);
        return;
      }
      if (!state.config.commands.includes(name)) {
        notice(`\`${name}\` is not a valid command. In Slack, all messages that start with ` +
          'the "/" character are interpreted as commands.');
        return;
      }
      const result = await api("/api/commands", {
        channel: state.channel, user: state.user, command: name, text: argument || "",
      });
      if (!result.ok) notice(explainFailure(result, name));
      return;
    }
    let files = [];
    if (attachments.length) {
      const uploads = await Promise.all(attachments.map((a) => upload(a.file, user)));
      const failed = uploads.findIndex((result) => !result.ok);
      if (failed >= 0) {
        restoreAttachments(where, attachments, text);
        notice(explainUpload(uploads[failed], attachments[failed].file), threadTs, channel);
        return;
      }
      files = uploads.map((result) => result.file.id);
      for (const a of attachments) if (a.preview) URL.revokeObjectURL(a.preview);
    }
    const result = await api("/api/messages", {
      channel, user, text: text.trim() ? text : "", thread_ts: threadTs, files,
    });
    if (!result.ok) notice(explainFailure(result, "the message"), threadTs, channel);
  }

  async function upload(file, user) {
    let data;
    try {
      data = await readBase64(file);
    } catch (err) {
      return { ok: false, error: "unreadable" };
    }
    return api("/api/upload", {
      user, name: file.name, mimetype: file.type || "application/octet-stream", data,
    });
  }

  function readBase64(file) {
    return new Promise((resolve, reject) => {
      const reader = new FileReader();
      reader.onload = () => {
        const url = String(reader.result);  // data:<type>;base64,<data>
        const comma = url.indexOf(",");
        resolve(comma >= 0 ? url.slice(comma + 1) : "");
      };
      reader.onerror = () => reject(reader.error);
      reader.readAsDataURL(file);
    });
  }

  function explainUpload(result, file) {
    const name = `\`${file.name}\``;
    if (result.error === "file_too_large" || result.error === "request_too_large") {
      return `:warning: ${name} is too large for the playground (${formatSize(file.size)}).`;
    }
    if (result.error === "missing_data" || result.error === "no_file_data") {
      return `:warning: ${name} is empty: Slack does not take empty files.`;
    }
    return explainFailure(result, name);
  }

  async function editMessage(channel, ts, threadTs) {
    const message = channelMessages(channel).get(ts);
    const text = window.prompt("Edit message", message ? message.text : "");
    if (text === null || !text.trim()) return;
    const result = await api("/api/edit", { channel, user: state.user, ts, text });
    if (!result.ok) notice(explainFailure(result, "the edit"), threadTs, channel);
  }

  async function postAlert(channel, ts, threadTs) {
    const message = channelMessages(channel).get(ts);
    const thread = (message && message.thread_ts) || ts;
    const result = await api("/api/alert", { channel, thread_ts: thread });
    if (!result.ok) notice(explainFailure(result, "the alert"), threadTs, channel);
  }

  async function runShortcut(callbackId, channel, messageTs, threadTs) {
    const result = await api("/api/shortcuts", {
      channel, user: state.user, message_ts: messageTs, callback_id: callbackId,
    });
    if (!result.ok) notice(explainFailure(result, "the shortcut"), threadTs, channel);
  }

  async function clickAction(actionId, channel, messageTs, threadTs, value) {
    const key = value === undefined
      ? `${channel}/${messageTs}/${actionId}` : `${channel}/${messageTs}/${actionId}/${value}`;
    // Slack holds a clicked button until the app acks, so one click is one delivery.
    if (state.clicking.has(key)) return;
    state.clicking.add(key);
    scheduleRender();
    const result = await api("/api/action", {
      channel, user: state.user, message_ts: messageTs, action_id: actionId,
      ...(value === undefined ? {} : { value }),
    });
    state.clicking.delete(key);
    scheduleRender();
    if (!result.ok) notice(explainFailure(result, "the button"), threadTs, channel);
  }

  // ---- The assistant panel and the Home tab ----------------------------------------------

  // What the panel is told the user is looking at: a channel, or nothing in a DM.
  function contextOf(channel) {
    return channel && !isDm(channel) ? channel : null;
  }

  // The user's latest panel thread the app has answered in; one it never answered (the bot
  // was down, say) is not worth going back to.
  function latestAssistantThread(user) {
    const threads = [...state.assistantThreads.values()]
      .filter((t) => t.user === user && repliesOf(t.channel, t.thread_ts).length)
      .sort((a, b) => byTs({ ts: a.thread_ts }, { ts: b.thread_ts }));
    return threads.length ? threads[threads.length - 1] : null;
  }

  // Opens the panel for the current user: back on their latest conversation, as Slack does,
  // unless `fresh` (New chat) or there is none, which starts a new thread.
  async function openAssistant(fresh) {
    const user = state.user;
    const context = contextOf(state.channel);
    // Slack's side panel is the one the thread pane uses: one at a time.
    state.thread = null;
    state.menu = null;
    jumpToBottom = true;
    const resumed = fresh ? null : latestAssistantThread(user);
    if (resumed) {
      state.assistant = { open: true, user, channel: resumed.channel, ts: resumed.thread_ts, error: null };
      render();
      $("#assistant-composer textarea").focus();
      syncAssistantContext();
      return;
    }
    const opening = { open: true, user, channel: state.config.dms[user], ts: null, error: null };
    state.assistant = opening;
    render();
    const result = await api("/api/assistant/open", { user, context_channel: context });
    if (state.assistant !== opening) return;  // closed, or another chat began meanwhile
    if (result.thread_ts) {
      opening.ts = result.thread_ts;
      const key = `${result.channel}/${result.thread_ts}`;
      if (!state.assistantThreads.has(key)) {
        state.assistantThreads.set(key, {
          user, channel: result.channel, thread_ts: result.thread_ts, context_channel: context,
        });
      }
    }
    if (!result.ok) opening.error = explainFailure(result, "`assistant_thread_started`");
    render();
    $("#assistant-composer textarea").focus();
  }

  function closeAssistant() {
    state.assistant = { open: false, user: null, channel: null, ts: null, error: null };
  }

  // Slack tells the app when the user, with the panel open, moves to another channel.
  async function syncAssistantContext() {
    const panel = state.assistant;
    if (!panel.open || !panel.ts || panel.user !== state.user) return;
    const thread = state.assistantThreads.get(`${panel.channel}/${panel.ts}`);
    const context = contextOf(state.channel);
    if (!thread || (thread.context_channel || null) === context) return;
    thread.context_channel = context;  // now, so that quick moves send one change each
    scheduleRender();
    const result = await api("/api/assistant/context", {
      user: panel.user, channel: panel.channel, thread_ts: panel.ts, context_channel: context,
    });
    if (!result.ok) {
      notice(explainFailure(result, "`assistant_thread_context_changed`"), panel.ts, panel.channel);
    }
  }

  // A suggested prompt is sent as the user's own message in the thread, as Slack sends it.
  async function sendPrompt(index) {
    const { channel, ts, user } = state.assistant;
    const entry = state.prompts.get(`${channel}/${ts}`);
    const prompt = entry && entry.prompts[index];
    if (!prompt || user !== state.user) return;
    jumpToBottom = true;
    const result = await api("/api/messages", { channel, user, text: prompt.message, thread_ts: ts });
    if (!result.ok) notice(explainFailure(result, "the prompt"), ts, channel);
  }

  function showHome(home) {
    if (home === state.home) return;
    state.home = home;
    state.thread = null;
    state.menu = null;
    jumpToBottom = true;
    render();
    if (home) openHome();
  }

  // Slack sends app_home_opened each time the tab is opened; the app publishes its view.
  async function openHome() {
    const user = state.user;
    state.homeOpening = true;
    scheduleRender();
    const result = await api("/api/home/open", { user });
    state.homeOpening = false;
    scheduleRender();
    if (state.user === user) state.homeError = result.ok ? null : explainFailure(result, "`app_home_opened`");
  }

  // The published button behind a click: sections' accessories and actions blocks' elements.
  function viewButton(view, actionId, value) {
    for (const block of (view && Array.isArray(view.blocks)) ? view.blocks : []) {
      const candidates = [block && block.accessory, ...((block && Array.isArray(block.elements)) ? block.elements : [])];
      const found = candidates.find((b) => isButton(b) && b.action_id === actionId &&
        (b.value === undefined ? "" : String(b.value)) === value);
      if (found) return found;
    }
    return null;
  }

  // Block Kit's confirmation dialog: resolves true only when its confirm button is clicked
  // (deny, Escape or a click on the backdrop cancel, as in Slack).
  function confirmed(confirm) {
    const dialog = $("#confirm-dialog");
    const plain = (text, fallback) => (text && typeof text.text === "string" && text.text) || fallback;
    $("#confirm-title").textContent = plain(confirm.title, "Are you sure?");
    $("#confirm-text").innerHTML = textObjectHtml(confirm.text, { me: state.user, userName, mrkdwn: true });
    $("#confirm-yes").textContent = plain(confirm.confirm, "Yes");
    $("#confirm-deny").textContent = plain(confirm.deny, "Cancel");
    dialog.returnValue = "";
    return new Promise((resolve) => {
      dialog.addEventListener("close", () => resolve(dialog.returnValue === "confirm"), { once: true });
      dialog.showModal();
    });
  }

  async function clickHomeAction(actionId, value) {
    const user = state.user;
    const key = `home/${user}/${actionId}/${value}`;
    if (state.clicking.has(key)) return;
    state.clicking.add(key);
    scheduleRender();
    const result = await api("/api/home/action", { user, action_id: actionId, value });
    state.clicking.delete(key);
    scheduleRender();
    if (state.user === user) state.homeError = result.ok ? null : explainFailure(result, "the button");
  }

  // ---- Rendering -------------------------------------------------------------------------

  function formatTime(ts) {
    return new Date(tsNumber(ts) * 1000).toLocaleTimeString([], { hour: "numeric", minute: "2-digit" });
  }

  function channelLabel(channel) {
    const known = state.config.channels.find((c) => c.id === channel);
    return known ? `# ${known.name}` : state.config.bot.name;
  }

  function isDm(channel) {
    return Object.values(state.config.dms).includes(channel);
  }

  function textHtml(message) {
    const ctx = {
      me: state.user,
      userName,
      // The bot writes standard Markdown (markdown_text, or a markdown block whose fallback
      // `text` is the same body); people and plain `text` use mrkdwn.
      mrkdwn: message.markdown_text === undefined && !hasBlock(message, "markdown"),
    };
    let html = message.text ? renderMarkdown(message.text, ctx) : "";
    if (!html && Array.isArray(message.blocks)) {
      html = message.blocks.map((block) => {
        if (block.type === "markdown") return renderMarkdown(block.text, { ...ctx, mrkdwn: false });
        if (block.type === "section" && block.text) return renderMarkdown(block.text.text, ctx);
        if (block.type === "header" && block.text) return `<p><b>${escapeHtml(block.text.text)}</b></p>`;
        return "";
      }).join("");
    }
    // An app's attachments: the old-style coloured boxes alerts still come in.
    for (const a of Array.isArray(message.attachments) ? message.attachments : []) {
      const fields = (a.fields || []).map((f) => `${f.title}: ${f.value}`).join("\n");
      const body = [a.title ? `*${a.title}*` : "", a.text || "", fields].filter(Boolean).join("\n");
      html += `<div class="attachment">${renderMarkdown(body || a.fallback || "", ctx)}</div>`;
    }
    return html || "<p></p>";
  }

  function formatSize(bytes) {
    if (bytes < 1000) return `${bytes} B`;
    if (bytes < 1_000_000) return `${Math.ceil(bytes / 1000)} KB`;
    return `${(bytes / 1_000_000).toFixed(1)} MB`;
  }

  // A short label for a file's icon, from its type as Slack names it ("png", "pdf", …).
  function fileBadge(name, filetype) {
    const type = filetype || (String(name).includes(".") ? String(name).split(".").pop() : "file");
    return escapeHtml(String(type).slice(0, 4).toUpperCase());
  }

  // Files shared with a message, as small cards under its text; images uploaded here show a
  // thumbnail (the page cannot fetch url_private, which needs the bot's token).
  function filesHtml(message) {
    if (!Array.isArray(message.files) || !message.files.length) return "";
    const cards = message.files.filter((f) => f && f.id).map((file) => {
      const name = escapeHtml(file.name || file.title || file.id);
      const size = typeof file.size === "number" ? formatSize(file.size) : "";
      const info = `<span class="file-info"><span class="file-name">${name}</span>` +
        `<span class="file-size">${size}</span></span>`;
      const attrs = `data-file-id="${escapeHtml(file.id)}" title="${name}"`;
      if (file.preview_url) {
        const url = escapeHtml(file.preview_url);
        return `<a class="file-card image" ${attrs} href="${url}" target="_blank" rel="noopener noreferrer">` +
          `<img class="file-thumb" src="${url}" alt="">${info}</a>`;
      }
      return `<div class="file-card" ${attrs}><span class="file-icon">${fileBadge(file.name, file.filetype)}</span>${info}</div>`;
    }).join("");
    return `<div class="files">${cards}</div>`;
  }

  function hasBlock(message, type) {
    return Array.isArray(message.blocks) && message.blocks.some((block) => block && block.type === type);
  }

  // Buttons of the message's actions blocks, under its text, as Slack shows them. Only stored
  // messages get them: a click is delivered with the message LocalSlack keeps.
  function blockActionsHtml(channel, message) {
    if (message.kind !== "message" || !Array.isArray(message.blocks)) return "";
    return message.blocks.filter((block) => block && ["actions", "context_actions"].includes(block.type) && Array.isArray(block.elements))
      .map((block) => {
        if (block.type === "context_actions") return contextActionsHtml(channel, message, block);
        const buttons = block.elements.filter(isButton).map((button) => buttonHtml(button,
          `data-ts="${escapeHtml(message.ts)}"`,
          state.clicking.has(`${channel}/${message.ts}/${button.action_id}`))).join("");
        return buttons ? `<div class="block-actions">${buttons}</div>` : "";
      }).join("");
  }

  // Slack's feedback buttons: each half is a button of its own, clicked with its value.
  function contextActionsHtml(channel, message, block) {
    const buttons = block.elements.filter((e) => e && e.type === "feedback_buttons" && e.action_id)
      .flatMap((element) => [element.positive_button, element.negative_button]
        .filter((half) => half && typeof half.value === "string")
        .map((half) => buttonHtml({ ...half, action_id: element.action_id },
          `data-ts="${escapeHtml(message.ts)}" data-value="${escapeHtml(half.value)}"`,
          state.clicking.has(`${channel}/${message.ts}/${element.action_id}/${half.value}`))))
      .join("");
    return buttons ? `<div class="block-actions context-actions">${buttons}</div>` : "";
  }

  function isButton(element) {
    return Boolean(element && element.type === "button" && element.action_id);
  }

  function buttonHtml(button, attributes, busy) {
    const label = button.text && button.text.text ? button.text.text : button.action_id;
    const shown = escapeHtml(label).replace(/:([a-z0-9_+-]+):/g, (m, name) => EMOJI[name] || m);
    const style = ["primary", "danger"].includes(button.style) ? ` ${button.style}` : "";
    return `<button type="button" class="block-button${style}${busy ? " busy" : ""}"${busy ? " disabled" : ""} ` +
      `data-action-id="${escapeHtml(button.action_id)}" ${attributes} ` +
      `title="${escapeHtml(label)}">${shown}</button>`;
  }

  // A Block Kit text object: mrkdwn rendered, plain_text as is.
  function textObjectHtml(text, ctx) {
    if (!text || typeof text.text !== "string") return "";
    if (text.type === "mrkdwn") return renderMarkdown(text.text, ctx);
    return `<p>${escapeHtml(text.text).replace(/:([a-z0-9_+-]+):/g, (m, name) => EMOJI[name] || m)}</p>`;
  }

  // A published view's blocks, drawn simply: the kinds an App Home is made of. Buttons carry
  // their value, since a Home lists one button per conversation under a shared action_id.
  function viewBlocksHtml(blocks, user) {
    const ctx = { me: state.user, userName, mrkdwn: true };
    const homeButton = (button) => {
      const value = button.value === undefined ? "" : String(button.value);
      return buttonHtml(button, `data-value="${escapeHtml(value)}"`,
        state.clicking.has(`home/${user}/${button.action_id}/${value}`));
    };
    return (Array.isArray(blocks) ? blocks : []).map((block) => {
      if (!block || typeof block !== "object") return "";
      const id = block.block_id ? ` data-block-id="${escapeHtml(block.block_id)}"` : "";
      switch (block.type) {
        case "header":
          return `<h2 class="home-block block-header"${id}>${escapeHtml((block.text && block.text.text) || "")}</h2>`;
        case "section": {
          const fields = Array.isArray(block.fields) && block.fields.length
            ? `<div class="block-fields">${block.fields.map((f) => `<div>${textObjectHtml(f, ctx)}</div>`).join("")}</div>`
            : "";
          const accessory = isButton(block.accessory) ? `<div class="block-accessory">${homeButton(block.accessory)}</div>` : "";
          return `<div class="home-block block-section"${id}><div class="text">${textObjectHtml(block.text, ctx)}` +
            `${fields}</div>${accessory}</div>`;
        }
        case "markdown":
          return `<div class="home-block block-markdown text"${id}>${renderMarkdown(block.text, { ...ctx, mrkdwn: false })}</div>`;
        case "context": {
          const parts = (Array.isArray(block.elements) ? block.elements : [])
            .filter((e) => e && (e.type === "mrkdwn" || e.type === "plain_text"))
            .map((e) => `<span class="text">${textObjectHtml(e, ctx)}</span>`).join("");
          return `<div class="home-block block-context"${id}>${parts}</div>`;
        }
        case "divider":
          return `<hr class="home-block block-divider"${id}>`;
        case "actions": {
          const buttons = (Array.isArray(block.elements) ? block.elements : []).filter(isButton).map(homeButton).join("");
          return buttons ? `<div class="home-block block-actions"${id}>${buttons}</div>` : "";
        }
        default:
          return "";
      }
    }).join("");
  }

  function homeHtml() {
    const view = state.homeViews.get(state.user);
    const error = state.homeError ? `<div class="home-error text">${renderMarkdown(state.homeError, { me: state.user, userName, mrkdwn: true })}</div>` : "";
    if (!view) {
      const waiting = state.homeOpening ? "Opening the app's Home…" : "The app has not published a Home view yet.";
      return `${error}<div class="intro">${waiting}</div>`;
    }
    return error + viewBlocksHtml(view.blocks, state.user);
  }

  function avatarHtml(message) {
    if (message.kind === "notice") return '<div class="avatar slackbot">S</div>';
    if (message.bot_id && message.user !== state.config.bot.id && message.username) {
      return `<div class="avatar app">${escapeHtml(message.username[0].toUpperCase())}</div>`;
    }
    if (message.bot_id || message.kind === "ephemeral") return '<div class="avatar bot">t</div>';
    const name = userName(message.user);
    return `<div class="avatar" style="background:${colorFor(message.user)}">${escapeHtml(name[0].toUpperCase())}</div>`;
  }

  function repliesOf(channel, ts) {
    return [...channelMessages(channel).values()]
      .filter((m) => m.thread_ts === ts && m.ts !== ts)
      .sort(byTs);
  }

  function threadSummaryHtml(channel, message) {
    const replies = repliesOf(channel, message.ts);
    if (!replies.length) return "";
    // Another app's post has no user: its bot id stands for it.
    const users = [...new Set(replies.map((r) => r.user || r.bot_id))].slice(0, 4);
    const avatars = users.map((u) => {
      const bot = u === state.config.bot.id;
      const style = bot ? "background:#2eb67d" : `background:${colorFor(u)}`;
      return `<span style="${style}">${bot ? "t" : escapeHtml(userName(u)[0].toUpperCase())}</span>`;
    }).join("");
    const count = replies.length === 1 ? "1 reply" : `${replies.length} replies`;
    return `<button type="button" class="thread-summary" data-open-thread="${escapeHtml(message.ts)}">` +
      `<span class="mini-avatars">${avatars}</span><span class="replies">${count}</span>` +
      `<span class="last-reply">Last reply ${formatTime(replies[replies.length - 1].ts)}</span></button>`;
  }

  function actionsHtml(where, message) {
    if (message.kind !== "message") return "";
    const key = `${where}/${message.ts}`;
    const open = state.menu === key;
    const reply = where === "channel"
      ? `<button type="button" class="action" data-open-thread="${escapeHtml(message.ts)}" title="Reply in thread" aria-label="Reply in thread">${ICONS.reply}</button>`
      : "";
    const ts = escapeHtml(message.ts);
    // A person edits their own message; a monitoring app can be made to post in the thread.
    const edit = message.user === state.user && !message.bot_id
      ? `<button type="button" class="menu-item" role="menuitem" data-edit="${ts}"><span>Edit message</span></button>`
      : "";
    const alert = isDm(state.channel) ? "" :
      `<button type="button" class="menu-item" role="menuitem" data-alert="${ts}">` +
      '<span>Post an alert in this thread</span><span class="app">Monitoring</span></button>';
    const items = edit + alert + state.config.shortcuts.map((s) =>
      `<button type="button" class="menu-item" role="menuitem" data-shortcut="${escapeHtml(s.callback_id)}" data-ts="${ts}">` +
      `<span>${escapeHtml(s.name)}</span><span class="app">${escapeHtml(state.config.bot.name)}</span></button>`).join("");
    const menu = open
      ? `<div class="menu" role="menu"><div class="menu-title">Message shortcuts</div>${items}</div>`
      : "";
    return `<div class="actions${open ? " open" : ""}">${reply}` +
      `<button type="button" class="action more" data-menu="${escapeHtml(key)}" title="More actions" aria-label="More actions" aria-expanded="${open}">⋮</button>${menu}</div>`;
  }

  function messageHtml(where, channel, message) {
    const bot = Boolean(message.bot_id) || message.kind === "ephemeral";
    // Another app (a monitoring alert) posts under its own name.
    const app = message.bot_id && message.user !== state.config.bot.id ? message.username : null;
    const author = message.kind === "notice" ? "Slackbot" : app || (bot ? state.config.bot.name : userName(message.user));
    const classes = ["message", message.kind];
    if (bot) classes.push("bot");
    if (message.streaming) classes.push("streaming");
    if (state.highlight === message.ts) classes.push("highlight");
    const badge = bot ? '<span class="app-badge">APP</span>' : "";
    const edited = message.edited && !message.streaming ? '<span class="edited">(edited)</span>' : "";
    const only = message.kind === "message" ? "" : `<div class="ephemeral-note">${ICONS.eye} Only visible to you</div>`;
    const summary = where === "channel" && message.kind === "message" ? threadSummaryHtml(channel, message) : "";
    return `<div class="${classes.join(" ")}" data-ts="${escapeHtml(message.ts)}" data-user="${escapeHtml(message.user || "")}">` +
      `${avatarHtml(message)}<div class="content"><div class="meta"><span class="author">${escapeHtml(author)}</span>` +
      `${badge}<span class="time">${formatTime(message.ts)}</span>${edited}</div>` +
      `${bodyHtml(message)}${blockActionsHtml(channel, message)}${only}${summary}</div>` +
      `${actionsHtml(where, message)}</div>`;
  }

  function bodyHtml(message) {
    const files = filesHtml(message);
    const tasks = tasksHtml(message);
    // A file shared without a comment has no text line at all, as in Slack; nor has an
    // answer that so far only shows its task cards.
    const text = (files || tasks) && !message.text ? "" : `<div class="text">${textHtml(message)}</div>`;
    return tasks + text + files;
  }

  const TASK_ICONS = { pending: "○", in_progress: "◐", complete: "✓", error: "✕" };
  const TASK_LABELS = { pending: "Pending", in_progress: "In progress", complete: "Done", error: "Error" };

  // A streamed answer's task cards (Slack's task_update chunks), above its text as Slack's
  // timeline draws them: status, title, output or details, and the sources as links.
  function tasksHtml(message) {
    if (!Array.isArray(message.tasks) || !message.tasks.length) return "";
    const cards = message.tasks.filter((t) => t && t.id).map((task) => {
      const status = Object.hasOwn(TASK_ICONS, task.status) ? task.status : "pending";
      const note = task.output || task.details;
      const sources = (Array.isArray(task.sources) ? task.sources : [])
        .filter((s) => s && /^https?:\/\//i.test(String(s.url)))
        .map((s) => `<a class="task-source" href="${escapeHtml(s.url)}" target="_blank" rel="noopener noreferrer">` +
          `${escapeHtml(s.text || s.url)}</a>`).join("");
      return `<div class="task-card" data-task-id="${escapeHtml(task.id)}" data-status="${status}">` +
        `<span class="task-icon" title="${TASK_LABELS[status]}">${TASK_ICONS[status]}</span>` +
        `<div class="task-body"><div class="task-title">${escapeHtml(task.title || "")}` +
        `<span class="task-status">${TASK_LABELS[status]}</span></div>` +
        (note ? `<div class="task-output">${escapeHtml(note)}</div>` : "") +
        (sources ? `<div class="task-sources">${sources}</div>` : "") +
        "</div></div>";
    }).join("");
    return `<div class="tasks">${cards}</div>`;
  }

  function privateFor(channel, threadTs) {
    const mine = (e) => e.channel === channel && e.user === state.user && (e.thread_ts || null) === threadTs;
    const ephemerals = state.ephemerals.filter(mine).map((e) => ({ ...e, ts: e.message_ts, kind: "ephemeral" }));
    const notices = state.notices.filter(mine).map((n) => ({ ...n, kind: "notice" }));
    return [...ephemerals, ...notices];
  }

  function introHtml(channel) {
    if (isDm(channel)) {
      return `<div class="intro"><h2>${escapeHtml(state.config.bot.name)}</h2>This is the very beginning of ` +
        "your direct messages with the app. Write anything to start a conversation; it answers in a thread.</div>";
    }
    const name = escapeHtml(channelLabel(channel));
    return `<div class="intro"><h2>${name}</h2>This is the very beginning of the <b>${name}</b> channel. ` +
      `Mention <b>@${escapeHtml(state.config.bot.name)}</b> to start a conversation; it answers in a thread.</div>`;
  }

  // Whether each pane shows its latest message, as the reader last scrolled it. Images load
  // after a render has scrolled to the bottom and push the latest message below the fold:
  // a pane the reader left at the bottom stays there as each one arrives.
  const atBottom = new WeakMap();
  const lastTop = new WeakMap();

  function followBottom(element) {
    if (atBottom.has(element)) return;
    atBottom.set(element, true);
    lastTop.set(element, element.scrollTop);
    // Only the reader scrolling up leaves the bottom. A scroll event of our own jump can
    // arrive after an image has grown the pane: measured then, it would look like one.
    element.addEventListener("scroll", () => {
      const top = element.scrollTop;
      if (top < lastTop.get(element) - 1) atBottom.set(element, false);
      else if (element.scrollHeight - top - element.clientHeight < 120) atBottom.set(element, true);
      lastTop.set(element, top);
    });
    // Capturing: "load" does not bubble.
    element.addEventListener("load", () => {
      if (atBottom.get(element)) toBottom(element);
    }, true);
  }

  // Our own jump to the latest message; the scroll event it causes is not the reader's.
  function toBottom(element) {
    element.scrollTop = element.scrollHeight;
    lastTop.set(element, element.scrollTop);
    atBottom.set(element, true);
  }

  function setHtml(element, html, forceBottom) {
    followBottom(element);
    if (element.dataset.html === html && !forceBottom) return;
    const nearBottom = element.scrollHeight - element.scrollTop - element.clientHeight < 120;
    element.innerHTML = html;
    element.dataset.html = html;
    if (nearBottom || forceBottom) toBottom(element);
  }

  // The status line is rendered on every streamed chunk; left alone while it says the same,
  // so its Stop button is not swapped for a copy under the pointer mid-click.
  function setStatusHtml(element, html) {
    if (element.dataset.html === html) return;
    element.innerHTML = html;
    element.dataset.html = html;
  }

  let renderPending = false;
  let jumpToBottom = true;

  function scheduleRender() {
    if (renderPending) return;
    renderPending = true;
    requestAnimationFrame(() => {
      renderPending = false;
      render();
    });
  }

  function render() {
    if (!state.config) return;
    const channel = state.channel;
    state.unread.delete(channel);

    const sidebarItem = (id, inner) => {
      const classes = [id === channel ? "selected" : "", state.unread.has(id) ? "unread" : ""].join(" ");
      return `<li><button type="button" class="${classes}" data-channel="${escapeHtml(id)}">${inner}</button></li>`;
    };
    $("#channel-list").innerHTML = state.config.channels
      .map((c) => sidebarItem(c.id, `<span class="sigil">#</span>${escapeHtml(c.name)}`)).join("");
    $("#dm-list").innerHTML = sidebarItem(state.config.dms[state.user],
      `<span class="app-icon">t</span>${escapeHtml(state.config.bot.name)}`);

    const label = channelLabel(channel);
    $("#channel-title").textContent = label;
    $("#channel-composer textarea").placeholder = `Message ${label.replace("# ", "#")}`;

    // The app's DM has its tabs, as in Slack: Messages, and the Home the app publishes.
    const appDm = isDm(channel);
    if (!appDm) state.home = false;
    $("#channel-tabs").hidden = !appDm;
    $("#messages-tab").setAttribute("aria-selected", String(!state.home));
    $("#home-tab").setAttribute("aria-selected", String(state.home));
    $("#channel-messages").hidden = state.home;
    $("#channel-composer").hidden = state.home;
    $("#home-view").hidden = !state.home;
    if (state.home) setHtml($("#home-view"), homeHtml(), false);

    const top = [...channelMessages(channel).values()].filter(
      (m) => !m.thread_ts || m.thread_ts === m.ts || m.subtype === "thread_broadcast",
    ).map((m) => {
      // A panel thread's root is listed in the DM under the title the app gave the thread.
      const title = state.assistantThreads.has(`${channel}/${m.ts}`) && state.titles.get(`${channel}/${m.ts}`);
      return { ...m, kind: "message", ...(title ? { text: title } : {}) };
    });
    const listed = [...top, ...privateFor(channel, null)].sort(byTs);
    setHtml($("#channel-messages"),
      introHtml(channel) + listed.map((m) => messageHtml("channel", channel, m)).join(""), jumpToBottom);

    renderAssistant();

    const panel = $("#thread-panel");
    const thread = state.thread && state.thread.channel === channel ? state.thread : null;
    panel.hidden = !thread;
    if (thread) {
      const parent = channelMessages(channel).get(thread.ts);
      const replies = repliesOf(channel, thread.ts).map((m) => ({ ...m, kind: "message" }));
      const rest = [...replies, ...privateFor(channel, thread.ts)].sort(byTs);
      let html = parent ? messageHtml("thread", channel, { ...parent, kind: "message" }) : "";
      if (replies.length) {
        html += `<div class="thread-divider">${replies.length === 1 ? "1 reply" : `${replies.length} replies`}</div>`;
      }
      html += rest.map((m) => messageHtml("thread", channel, m)).join("");
      $("#thread-channel").textContent = label;
      const workflow = $("#thread-workflow");
      workflow.hidden = !state.config.workflow_url;
      if (state.config.workflow_url) {
        workflow.href = state.config.workflow_url
          .replace("{channel}", channel)
          .replace("{thread_ts}", thread.ts);
      }
      setHtml($("#thread-messages"), html, jumpToBottom);
      setStatusHtml($("#thread-status"), statusHtml(channel, thread.ts));
    }
    jumpToBottom = false;
  }

  // The agent session's status, as Slack shows it on the thread, and the thread's status
  // text (an assistant thread's, or words a session has none for).
  const SESSION_LABELS = {
    processing: "Working", suspended: "Waiting for you", active: "Active", closed: "Closed",
  };

  function statusHtml(channel, threadTs) {
    const key = `${channel}/${threadTs}`;
    const session = state.sessions.get(key);
    const badge = session
      ? `<span class="session session-${escapeHtml(session)}" data-session="${escapeHtml(session)}">` +
        `${escapeHtml(SESSION_LABELS[session] || session)}</span> `
      : "";
    const status = state.statuses.get(key) || (session === "processing" ? "is thinking…" : "");
    // Slack offers Stop on a session only while it is processing; held while the click is
    // being delivered, so one click is one agent_session_stopped.
    const stop = session === "processing"
      ? ` <button type="button" class="stop-session" data-stop-channel="${escapeHtml(channel)}" ` +
        `data-stop-thread="${escapeHtml(threadTs)}"${state.clicking.has(`stop/${key}`) ? " disabled" : ""}>` +
        `<span class="stop-square" aria-hidden="true"></span>Stop</button>`
      : "";
    return badge + (status
      ? `<b>${escapeHtml(state.config.bot.name)}</b> <span class="dots">${escapeHtml(status.replace(/[.…]+$/, ""))}</span>`
      : "") + stop;
  }

  async function stopSession(channel, threadTs) {
    const key = `stop/${channel}/${threadTs}`;
    if (state.clicking.has(key)) return;
    state.clicking.add(key);
    scheduleRender();
    const result = await api("/api/session/stop", { user: state.user, channel, thread_ts: threadTs });
    state.clicking.delete(key);
    scheduleRender();
    // A click that raced the answer's end finds nothing to stop, as the button was going away.
    if (!result.ok && result.error !== "session_not_processing") {
      notice(explainFailure(result, "Stop"), threadTs, channel);
    }
  }

  // The side panel shows its thread without the root, which is only the thread's anchor, and
  // the app's suggested prompts until the user writes after they were set.
  function renderAssistant() {
    const panel = state.assistant;
    const button = $("#assistant-button");
    button.setAttribute("aria-pressed", String(panel.open));
    button.classList.toggle("active", panel.open);
    $("#assistant-pane").hidden = !panel.open;
    if (!panel.open) return;
    const { channel, ts } = panel;
    const key = `${channel}/${ts}`;
    $("#assistant-title").textContent = (ts && state.titles.get(key)) || "New chat";
    const thread = ts && state.assistantThreads.get(key);
    const context = thread && thread.context_channel;
    $("#assistant-context").textContent = context ? `Viewing ${channelLabel(context).replace("# ", "#")}` : "";

    const replies = ts ? repliesOf(channel, ts).map((m) => ({ ...m, kind: "message" })) : [];
    const listed = ts ? [...replies, ...privateFor(channel, ts)].sort(byTs) : [];
    const intro = `<div class="intro"><h2>${escapeHtml(state.config.bot.name)}</h2>` +
      (ts ? "Ask anything; the app sees the channel you are viewing." : "Starting a new chat…") + "</div>";
    const error = panel.error
      ? messageHtml("assistant", channel, {
        kind: "notice", ts: ts || (Date.now() / 1000).toFixed(6), text: panel.error, user: panel.user,
      })
      : "";
    setHtml($("#assistant-messages"),
      intro + listed.map((m) => messageHtml("assistant", channel, m)).join("") + error, jumpToBottom);

    const entry = ts && state.prompts.get(key);
    const answeredAfter = entry && replies.some((m) => !m.bot_id && byTs(m, { ts: entry.after }) > 0);
    const prompts = $("#assistant-prompts");
    prompts.hidden = !entry || answeredAfter || panel.user !== state.user;
    const chips = prompts.hidden ? "" : (entry.title ? `<div class="suggested-title">${escapeHtml(entry.title)}</div>` : "") +
      entry.prompts.map((prompt, index) =>
        `<button type="button" class="suggested-prompt" data-prompt="${index}" title="${escapeHtml(prompt.message)}">` +
        `${escapeHtml(prompt.title)}</button>`).join("");
    setHtml(prompts, chips, false);
    setStatusHtml($("#assistant-status"), ts ? statusHtml(channel, ts) : "");
  }

  // ---- Interaction -----------------------------------------------------------------------

  function selectChannel(channel) {
    if (state.channel !== channel) {
      state.channel = channel;
      state.thread = null;
      state.menu = null;
    }
    state.home = false;
    jumpToBottom = true;
    render();
    $("#channel-composer textarea").focus();
    syncAssistantContext();
  }

  function openThread(channel, ts) {
    state.channel = channel;
    state.thread = { channel, ts };
    state.menu = null;
    state.home = false;
    // The thread takes the side panel's place, as in Slack.
    closeAssistant();
    jumpToBottom = true;
    render();
    $("#thread-composer textarea").focus();
  }

  // Links to this workspace's messages open them here, as Slack does.
  function followPermalink(href) {
    const match = href.match(/\.slack\.com\/archives\/([A-Z0-9]+)\/p(\d{7,})(?:\?(.*))?$/);
    if (!match || !state.config || !href.includes(`//${state.config.team_domain}.slack.com/`)) return false;
    const [, channel, digits, query] = match;
    if (!isKnownChannel(channel)) return false;
    const ts = `${digits.slice(0, -6)}.${digits.slice(-6)}`;
    const threadTs = new URLSearchParams(query || "").get("thread_ts");
    const owner = Object.entries(state.config.dms).find(([, id]) => id === channel);
    if (owner) {
      state.user = owner[0];
      $("#user-select").value = owner[0];
    }
    state.highlight = ts;
    openThread(channel, threadTs || ts);
    return true;
  }

  function setup() {
    const select = $("#user-select");
    const humans = state.config.users.filter((u) => !u.is_bot);
    select.innerHTML = humans
      .map((u) => `<option value="${escapeHtml(u.id)}">${escapeHtml(u.name)}</option>`).join("");
    select.value = state.user;

    const link = $("#temporal-link");
    link.hidden = !state.config.temporal_ui_url;
    if (state.config.temporal_ui_url) link.href = state.config.temporal_ui_url;
    $("#playground-note").textContent = "Local Slack playground: nothing here reaches Slack." +
      (state.config.offline_model ? " Replies come from the offline model, not Bedrock." : "");
    scheduleRender();
  }

  function bind() {
    $("#user-select").addEventListener("change", (event) => {
      const wasDm = state.config && isDm(state.channel);
      state.user = event.target.value;
      state.menu = null;
      state.homeError = null;
      // The side panel is one person's: theirs opens again from the Assistant button.
      closeAssistant();
      if (wasDm) {
        state.channel = state.config.dms[state.user];
        state.thread = null;
      }
      jumpToBottom = true;
      render();
      if (wasDm && state.home) openHome();
    });

    $("#assistant-button").addEventListener("click", () => {
      if (!state.config) return;
      if (state.assistant.open) {
        closeAssistant();
        render();
      } else {
        openAssistant(false);
      }
    });
    $("#assistant-new").addEventListener("click", () => openAssistant(true));
    $("#assistant-close").addEventListener("click", () => {
      closeAssistant();
      render();
    });
    $("#assistant-prompts").addEventListener("click", (event) => {
      const chip = event.target.closest("[data-prompt]");
      if (chip) sendPrompt(Number(chip.dataset.prompt));
    });
    $("#messages-tab").addEventListener("click", () => showHome(false));
    $("#home-tab").addEventListener("click", () => showHome(true));
    $("#home-view").addEventListener("click", (event) => {
      const anchor = event.target.closest("a[href]");
      if (anchor && followPermalink(anchor.href)) {
        event.preventDefault();
        return;
      }
      const button = event.target.closest("[data-action-id]");
      if (!button || button.disabled) return;
      const { actionId, value } = button.dataset;
      const spec = viewButton(state.homeViews.get(state.user), actionId, value);
      if (spec && spec.confirm && typeof spec.confirm === "object") {
        confirmed(spec.confirm).then((yes) => { if (yes) clickHomeAction(actionId, value); });
      } else {
        clickHomeAction(actionId, value);
      }
    });

    document.querySelector(".sidebar").addEventListener("click", (event) => {
      const button = event.target.closest("[data-channel]");
      if (button) selectChannel(button.dataset.channel);
    });

    for (const status of [$("#thread-status"), $("#assistant-status")]) {
      status.addEventListener("click", (event) => {
        const stop = event.target.closest("[data-stop-thread]");
        if (stop && !stop.disabled) stopSession(stop.dataset.stopChannel, stop.dataset.stopThread);
      });
    }

    $("#thread-close").addEventListener("click", () => {
      state.thread = null;
      state.menu = null;
      render();
    });

    for (const list of document.querySelectorAll(".messages")) {
      list.addEventListener("click", (event) => {
        const anchor = event.target.closest("a[href]");
        if (anchor && followPermalink(anchor.href)) {
          event.preventDefault();
          return;
        }
        // The assistant panel's list is a thread of the user's DM, wherever the main pane is.
        const { channel, threadTs } = composerTarget(list.dataset.where);
        const opener = event.target.closest("[data-open-thread]");
        if (opener) {
          openThread(channel, opener.dataset.openThread);
          return;
        }
        const more = event.target.closest("[data-menu]");
        if (more) {
          state.menu = state.menu === more.dataset.menu ? null : more.dataset.menu;
          render();
          return;
        }
        const edit = event.target.closest("[data-edit]");
        if (edit) {
          state.menu = null;
          render();
          editMessage(channel, edit.dataset.edit, threadTs);
          return;
        }
        const alert = event.target.closest("[data-alert]");
        if (alert) {
          state.menu = null;
          render();
          postAlert(channel, alert.dataset.alert, threadTs);
          return;
        }
        const item = event.target.closest("[data-shortcut]");
        if (item) {
          state.menu = null;
          render();
          runShortcut(item.dataset.shortcut, channel, item.dataset.ts, threadTs);
          return;
        }
        const button = event.target.closest("[data-action-id]");
        if (button && !button.disabled) {
          clickAction(button.dataset.actionId, channel, button.dataset.ts, threadTs, button.dataset.value);
        }
      });
    }

    document.addEventListener("click", (event) => {
      if (state.menu && !event.target.closest(".actions")) {
        state.menu = null;
        render();
      }
    });

    for (const form of document.querySelectorAll(".composer")) {
      const where = form.dataset.where;
      const textarea = form.querySelector("textarea");
      const input = form.querySelector('input[type="file"]');
      const submit = () => {
        const text = textarea.value;
        const pending = state.attachments[where];
        if ((!text.trim() && !pending.length) || !state.config) return;
        if (where === "assistant" && !state.assistant.ts) return;  // the thread is not there yet
        // A slash command takes no files: they wait in the composer for the next message.
        const attachments = COMMAND.test(text.trim()) ? [] : pending.splice(0);
        textarea.value = "";
        textarea.style.height = "";
        renderAttachments(where);
        jumpToBottom = true;
        send(where, text, attachments);
      };
      input.addEventListener("change", () => {
        addAttachments(where, [...input.files]);
        input.value = "";  // choosing the same file again is a change too
        textarea.focus();
      });
      form.querySelector(".attachments").addEventListener("click", (event) => {
        const remove = event.target.closest("[data-remove]");
        if (!remove) return;
        removeAttachment(where, Number(remove.dataset.remove));
        textarea.focus();
      });
      form.addEventListener("submit", (event) => {
        event.preventDefault();
        submit();
      });
      textarea.addEventListener("keydown", (event) => {
        if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
          event.preventDefault();
          submit();
        }
      });
      textarea.addEventListener("input", () => {
        textarea.style.height = "";
        textarea.style.height = `${Math.min(textarea.scrollHeight, 200)}px`;
      });
    }
  }

  // ---- Attachments in the composers ------------------------------------------------------

  let attachmentKey = 0;

  function addAttachments(where, files) {
    for (const file of files) {
      const preview = /^image\/(png|jpeg|gif|webp)$/.test(file.type) ? URL.createObjectURL(file) : null;
      state.attachments[where].push({ key: ++attachmentKey, file, preview });
    }
    renderAttachments(where);
  }

  function removeAttachment(where, key) {
    const list = state.attachments[where];
    const index = list.findIndex((a) => a.key === key);
    if (index < 0) return;
    const [removed] = list.splice(index, 1);
    if (removed.preview) URL.revokeObjectURL(removed.preview);
    renderAttachments(where);
  }

  // After a failed upload nothing is lost: the files, and the text if the box is still
  // empty, go back into the composer.
  function restoreAttachments(where, attachments, text) {
    state.attachments[where].unshift(...attachments);
    const textarea = $(`#${where}-composer textarea`);
    if (!textarea.value) textarea.value = text;
    renderAttachments(where);
  }

  function renderAttachments(where) {
    const box = $(`#${where}-composer .attachments`);
    const list = state.attachments[where];
    box.hidden = !list.length;
    box.innerHTML = list.map(({ key, file, preview }) => {
      const name = escapeHtml(file.name);
      const icon = preview
        ? `<img class="attachment-thumb" src="${escapeHtml(preview)}" alt="">`
        : `<span class="file-icon">${fileBadge(file.name, "")}</span>`;
      return `<div class="attachment" data-key="${key}" title="${name}">${icon}` +
        `<span class="file-info"><span class="file-name">${name}</span>` +
        `<span class="file-size">${formatSize(file.size)}</span></span>` +
        `<button type="button" class="attachment-remove" data-remove="${key}" ` +
        `aria-label="Remove ${name}" title="Remove">×</button></div>`;
    }).join("");
  }

  function connect() {
    const events = new EventSource("/api/events");
    events.onopen = () => { $("#connection").hidden = true; };
    events.onerror = () => { $("#connection").hidden = false; };  // EventSource retries itself
    events.onmessage = (message) => applyEvent(JSON.parse(message.data));
  }

  async function start() {
    bind();
    try {
      const response = await fetch("/api/state");
      applySnapshot(await response.json());
    } catch (err) {
      $("#connection").hidden = false;
    }
    connect();
  }

  window.threadchatPlayground = { renderMarkdown, renderInline, state };
  start();
})();
