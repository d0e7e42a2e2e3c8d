// The sandbox page: draws the loopback Slack workspace and sends what a person does to the
// page server, which signs it like Slack and hands it to the real bot. No secrets here: the
// per-session token below only proves the request comes from this page.
(() => {
  "use strict";
  const TOKEN = document.querySelector('meta[name="sandbox-token"]').content;
  const $ = (selector, root = document) => root.querySelector(selector);
  const POLL_MS = 1500;

  let state = null;
  let version = "";
  let as = localStorage.getItem("sandbox.as") || "";
  let channelId = localStorage.getItem("sandbox.channel") || "";
  let modalKey = "";
  let seen = {};

  // ---- talking to the page server ---------------------------------------------------

  async function api(path, body) {
    const init = { method: body === undefined ? "GET" : "POST",
                   headers: { "X-Sandbox-Token": TOKEN } };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(path, init);
    } catch (err) {
      toast("The sandbox server is not answering (stopped?).");
      return null;
    }
    let data = {};
    try { data = await response.json(); } catch (err) { data = {}; }
    if (!response.ok) {
      toast(data.error || `HTTP ${response.status}`);
      return null;
    }
    return data;
  }

  async function refresh(force) {
    const query = new URLSearchParams();
    if (as) query.set("as", as);
    if (!force && version) query.set("since", version);
    const data = await api("/api/state?" + query.toString());
    if (!data || data.unchanged || !data.channels) return;
    state = data;
    version = data.version;
    as = data.as;
    render();
  }

  async function busy(work) {
    document.body.classList.add("busy");
    try { return await work(); } finally {
      document.body.classList.remove("busy");
      await refresh(true);
    }
  }

  let toastTimer = 0;
  function toast(text) {
    const box = $("#toast");
    box.textContent = text;
    box.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => { box.hidden = true; }, 5000);
  }

  // ---- drawing -----------------------------------------------------------------------

  function me() { return state.personas.find((p) => p.key === as) || state.personas[0]; }

  function defaultChannel() {
    const person = me();
    const wanted = person.role === "AE" ? `ar-${person.key}`
      : person.role === "Manager" || person.role === "Finance" ? "ar-managers" : "";
    const found = state.channels.find((c) => c.name === wanted)
      || state.channels.find((c) => c.kind === "channel" && c.messages.length)
      || state.channels[0];
    return found.id;
  }

  function render() {
    $("#today").textContent = state.today_label;
    $("#team").textContent = state.workspace;
    const select = $("#persona");
    if (select.options.length !== state.personas.length) {
      select.innerHTML = "";
      for (const p of state.personas) {
        const option = document.createElement("option");
        option.value = p.key;
        option.textContent = `${p.name} · ${p.role}`;
        select.appendChild(option);
      }
    }
    select.value = as;
    if (!state.channels.some((c) => c.id === channelId)) channelId = defaultChannel();
    renderSidebar();
    renderChannel();
    renderModal();
  }

  function renderSidebar() {
    for (const [listId, kind] of [["#channels", "channel"], ["#dms", "dm"]]) {
      const list = $(listId);
      list.innerHTML = "";
      for (const c of state.channels.filter((x) => x.kind === kind)) {
        const item = document.createElement("li");
        const link = document.createElement("button");
        link.type = "button";
        link.className = "channel-link" + (c.id === channelId ? " active" : "")
          + (c.mine ? " mine" : "");
        link.dataset.id = c.id;
        link.dataset.name = c.name;
        const sigil = document.createElement("span");
        sigil.className = "sigil";
        sigil.textContent = kind === "dm" ? "●" : "#";
        const name = document.createElement("span");
        name.textContent = kind === "dm" ? `dunning ↔ ${c.name}${c.mine ? " (you)" : ""}`
          : c.name;
        link.append(sigil, name);
        const fresh = c.messages.length - (seen[c.id] || 0);
        if (c.id !== channelId && fresh > 0) {
          const count = document.createElement("span");
          count.className = "count";
          count.textContent = String(fresh);
          link.appendChild(count);
        }
        link.addEventListener("click", () => {
          channelId = c.id;
          localStorage.setItem("sandbox.channel", channelId);
          render();
        });
        item.appendChild(link);
        list.appendChild(item);
      }
    }
  }

  function renderChannel() {
    const channel = state.channels.find((c) => c.id === channelId);
    seen[channel.id] = channel.messages.length;
    $("#channel-name").textContent = channel.kind === "dm" ? `dunning ↔ ${channel.name}`
      : `# ${channel.name}`;
    $("#channel-note").textContent = channel.kind === "dm" ? "Direct messages with the app"
      : channel.member ? "" : "You are not a member of this channel";
    $("#composer-input").placeholder = channel.kind === "dm"
      ? "Message dunning  (try /dunning status acme)"
      : `Message #${channel.name}  (try /dunning status acme)`;
    const box = $("#messages");
    const atBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 40;
    const keep = box.scrollTop;
    box.innerHTML = "";
    if (!channel.messages.length) {
      const empty = document.createElement("div");
      empty.className = "empty";
      empty.textContent = "Nothing here yet.";
      box.appendChild(empty);
    }
    let day = "";
    for (const msg of channel.messages) {
      if (msg.day !== day) {
        day = msg.day;
        const divider = document.createElement("div");
        divider.className = "day";
        const label = document.createElement("span");
        label.textContent = day;
        divider.appendChild(label);
        box.appendChild(divider);
      }
      box.appendChild(messageNode(msg, channel));
    }
    box.scrollTop = atBottom || box.dataset.channel !== channel.id ? box.scrollHeight : keep;
    box.dataset.channel = channel.id;
  }

  function messageNode(msg, channel) {
    const wrap = document.createElement("div");
    wrap.className = "msg-wrap" + (msg.ephemeral ? " ephemeral" : "");
    wrap.dataset.ts = msg.ts;
    if (msg.ephemeral) {
      const note = document.createElement("div");
      note.className = "only-you";
      note.textContent = "Only visible to you";
      wrap.appendChild(note);
    }
    const holder = document.createElement("div");
    holder.innerHTML = msg.html;
    const article = holder.firstElementChild;
    if (msg.edited) {
      const edited = document.createElement("span");
      edited.className = "edited";
      edited.textContent = "(edited)";
      $(".msg-meta", article).appendChild(edited);
    }
    wrap.appendChild(article);
    wireMessage(article, msg, channel);
    if (msg.replies && msg.replies.length) {
      const thread = document.createElement("div");
      thread.className = "thread";
      for (const reply of msg.replies) thread.appendChild(messageNode(reply, channel));
      wrap.appendChild(thread);
    }
    return wrap;
  }

  function optionsOf(element) {
    const out = [...(element.options || [])];
    for (const group of element.option_groups || []) out.push(...(group.options || []));
    return out;
  }

  function plain(textObject) { return (textObject && textObject.text) || ""; }

  function nativeSelect(element, cls) {
    const select = document.createElement("select");
    select.className = cls;
    const blank = document.createElement("option");
    blank.value = "";
    blank.textContent = plain(element.placeholder)
      || (element.type === "users_select" ? "Select a person" : "Select an item");
    select.appendChild(blank);
    const choices = element.type === "users_select"
      ? state.users.map((u) => ({ value: u.id, text: { text: u.name } }))
      : optionsOf(element);
    for (const choice of choices) {
      const option = document.createElement("option");
      option.value = choice.value;
      option.textContent = plain(choice.text);
      select.appendChild(option);
    }
    const initial = element.initial_option ? element.initial_option.value
      : element.initial_user || "";
    select.value = initial;
    select.dataset.actionId = element.action_id || "";
    return select;
  }

  function nativeDate(element, cls) {
    const input = document.createElement("input");
    input.type = "date";
    input.className = cls;
    input.value = element.initial_date || "";
    input.dataset.actionId = element.action_id || "";
    return input;
  }

  // Buttons, menus and date pickers in a message become real controls that send a click.
  function wireMessage(article, msg, channel) {
    const container = $(".blocks", article);
    if (!container) return;
    [...container.children].forEach((node, blockIndex) => {
      const block = msg.blocks[blockIndex];
      if (!block) return;
      const hookup = (el, element, elementIndex) => {
        const send = (selected) => busy(() => api("/api/click", {
          as, channel: channel.id, ts: msg.ts, block: blockIndex, element: elementIndex,
          selected }));
        const kind = element.type || "";
        if (kind === "button") {
          if (element.url) return;
          el.addEventListener("click", () => send(undefined));
        } else if (kind.endsWith("_select") || kind === "overflow") {
          const select = nativeSelect(element, "native");
          select.addEventListener("change", () => { if (select.value) send(select.value); });
          el.replaceWith(select);
        } else if (kind === "datepicker") {
          const input = nativeDate(element, "native-date");
          input.addEventListener("change", () => { if (input.value) send(input.value); });
          el.replaceWith(input);
        }
      };
      if (block.type === "actions") {
        [...node.children].forEach((el, i) => {
          if (block.elements && block.elements[i]) hookup(el, block.elements[i], i);
        });
      } else if (block.accessory) {
        const accessory = $(".accessory", node);
        if (accessory && accessory.firstElementChild) {
          hookup(accessory.firstElementChild, block.accessory, 0);
        }
      }
    });
  }

  // ---- modals ------------------------------------------------------------------------

  function renderModal() {
    const layer = $("#modal-layer");
    const modal = state.modal;
    if (!modal) {
      layer.hidden = true;
      layer.innerHTML = "";
      modalKey = "";
      return;
    }
    const key = modal.id + JSON.stringify(modal.view);
    if (key !== modalKey) {
      modalKey = key;
      layer.innerHTML = modal.html;
      layer.hidden = false;
      wireModal(layer, modal);
    }
    showErrors(layer, modal.errors || {});
  }

  function wireModal(layer, modal) {
    const body = $(".modal-body", layer);
    const blocks = modal.view.blocks || [];
    [...body.children].forEach((node, i) => {
      const block = blocks[i];
      if (!block || block.type !== "input") return;
      const element = block.element || {};
      if (element.type === "datepicker") {
        const picker = $(".picker", node);
        if (picker) picker.replaceWith(nativeDate(element, "text-input"));
      } else if (element.type && element.type.endsWith("_select")) {
        const select = $(".select", node);
        if (select) select.replaceWith(nativeSelect(element, "text-input"));
      }
    });
    const close = () => busy(() => api("/api/close", { as, view_id: modal.id }));
    $(".modal-x", layer).addEventListener("click", close);
    for (const button of layer.querySelectorAll(".modal-foot .btn")) {
      if (button.classList.contains("btn-primary")) {
        button.addEventListener("click", () => submit(layer, modal));
      } else {
        button.addEventListener("click", close);
      }
    }
  }

  function valueOf(node, block) {
    const element = block.element || {};
    const picked = (value) => {
      const option = optionsOf(element).find((o) => o.value === value);
      return option ? { text: option.text, value: option.value } : null;
    };
    const out = { type: element.type };
    switch (element.type) {
      case "datepicker":
        out.selected_date = $("input", node).value || null;
        return [out, out.selected_date];
      case "users_select":
        out.selected_user = $("select", node).value || null;
        return [out, out.selected_user];
      case "radio_buttons": {
        const checked = $("input[type=radio]:checked", node);
        out.selected_option = checked ? picked(checked.value) : null;
        return [out, out.selected_option];
      }
      case "checkboxes":
        out.selected_options = [...node.querySelectorAll("input[type=checkbox]:checked")]
          .map((c) => picked(c.value)).filter(Boolean);
        return [out, out.selected_options.length ? out.selected_options : null];
      default:
        if (element.type && element.type.endsWith("_select")) {
          out.selected_option = picked($("select", node).value);
          return [out, out.selected_option];
        }
        out.value = ($("input, textarea", node) || {}).value || null;
        return [out, out.value];
    }
  }

  // Like Slack's client: a required input left empty never reaches the app.
  async function submit(layer, modal) {
    const values = {};
    const missing = {};
    const blocks = modal.view.blocks || [];
    [...$(".modal-body", layer).children].forEach((node, i) => {
      const block = blocks[i];
      if (!block || block.type !== "input") return;
      const blockId = block.block_id || `b${i}`;
      const actionId = (block.element && block.element.action_id) || `a${i}`;
      const [value, given] = valueOf(node, block);
      values[blockId] = { [actionId]: value };
      if (!block.optional && (given === null || given === "")) {
        missing[blockId] = "Please fill out this field.";
      }
    });
    if (Object.keys(missing).length) {
      showErrors(layer, missing);
      return;
    }
    const result = await busy(() => api("/api/submit", { as, view_id: modal.id, values }));
    if (result && result.errors) showErrors(layer, result.errors);
  }

  function showErrors(layer, errors) {
    for (const node of layer.querySelectorAll(".input[data-block-id]")) {
      node.classList.remove("has-error");
      const old = $(".input-error", node);
      if (old) old.remove();
      const message = errors[node.dataset.blockId];
      if (message) {
        node.classList.add("has-error");
        const line = document.createElement("div");
        line.className = "input-error";
        line.textContent = message;
        node.appendChild(line);
      }
    }
  }

  // ---- the top bar and the composer -------------------------------------------------

  $("#persona").addEventListener("change", (event) => {
    as = event.target.value;
    localStorage.setItem("sandbox.as", as);
    channelId = "";
    modalKey = "";
    refresh(true);
  });

  $("#next-day").addEventListener("click", async (event) => {
    const button = event.currentTarget;
    button.disabled = true;
    try {
      const result = await busy(() => api("/api/next-day", {}));
      if (result) toast(`It is now ${result.day}: ${result.created} new escalation(s), `
                        + `${result.posted} card(s) posted.`);
    } finally {
      button.disabled = false;
    }
  });

  $("#composer").addEventListener("submit", async (event) => {
    event.preventDefault();
    const input = $("#composer-input");
    const text = input.value.trim();
    if (!text) return;
    if (!text.startsWith("/")) {
      toast("Only slash commands reach the bot here: try /dunning status acme");
      return;
    }
    input.value = "";
    await busy(() => api("/api/command", { as, channel: channelId, text }));
  });

  refresh(true);
  setInterval(() => { if (!document.hidden) refresh(false); }, POLL_MS);
})();
