/* The Connect page. It lists what a connect session may connect, asks for what the chosen
   provider needs, and connects: a JSON POST for API keys and passwords, a sign-in window
   watched over a WebSocket for OAuth. It acts only with the session token from its link
   or from the page that embeds it, and tells that page how things went. */
'use strict';

(() => {
  const TOKEN_PATTERN = /^nango_connect_session_[a-f0-9]{64}$/;
  const TOKEN_STORE = 'authgate-connect-session';
  // The SDK always passes an apiURL; this value only means the caller left it out.
  const SDK_DEFAULT_API = 'https://api.nango.dev';
  const POPUP_MODES = new Set(['OAUTH1', 'OAUTH2', 'APP']);
  const FORM_ROUTES = { API_KEY: '/api-auth/api-key/', BASIC: '/api-auth/basic/', NONE: '/auth/unauthenticated/' };
  const MAX_LENGTH = 1024;
  const POPUP_POLL_MS = 500;
  const FORMATS = {
    email: (v) => /^[^\s@]+@[^\s@]+\.[^\s@]+$/.test(v),
    hostname: (v) => /^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$/i.test(v),
    uri: (v) => webURL(v) !== null,
    uuid: (v) => /^[0-9a-f]{8}-([0-9a-f]{4}-){3}[0-9a-f]{12}$/i.test(v),
  };

  const query = new URLSearchParams(location.search);
  const embedded = window.parent !== window;
  const api = apiBase(query.get('apiURL'));
  const closeOnWindowClosed = query.get('detectClosedAuthWindow') === 'true';
  const darkSystem = matchMedia('(prefers-color-scheme: dark)');
  const card = document.getElementById('card');
  const view = document.getElementById('view');
  const backButton = document.getElementById('back');
  const closeButton = document.getElementById('close');
  const state = {
    token: null,
    generation: 0, // bumped per token: answers for an older token are dropped
    parentOrigin: '*',
    theme: query.get('theme'),
    session: {},
    integrations: [],
    providers: new Map(),
    chosen: null,
    flow: null,
    popup: null, // the latest sign-in window, whose callback page is acknowledged even late
  };

  // --- start, and the page that embeds this one

  function start() {
    applyTheme();
    darkSystem.addEventListener('change', applyTheme);
    if (embedded) {
      document.documentElement.classList.add('embedded');
      card.setAttribute('role', 'dialog');
      card.setAttribute('aria-modal', 'true');
    }
    closeButton.hidden = !canClose();
    closeButton.addEventListener('click', close);
    backButton.addEventListener('click', showList);
    document.addEventListener('keydown', (event) => {
      if (event.key === 'Escape' && canClose()) close();
    });
    window.addEventListener('message', onMessage);
    const token = api === null ? null : tokenFromLink();
    if (api === null) fail('This page was given an API address that is not a web address.');
    else if (token !== null) useToken(token);
    else if (embedded) render('Connect an account', [status('Waiting for the application\u2026')]);
    else fail('This link has no session. Ask the application for a new link.');
    if (embedded) tell({ type: 'ready' }, '*');
  }

  function apiBase(raw) {
    if (!raw || raw.replace(/\/+$/, '') === SDK_DEFAULT_API) return location.origin;
    const url = webURL(raw);
    return url && url.href.replace(/\/+$/, '');
  }

  function tokenFromLink() {
    const token = query.get('session_token');
    if (token === null) return embedded ? null : storage('getItem');
    query.delete('session_token');
    const rest = query.toString();
    // Out of the address bar and history; kept for this tab so that a reload still works.
    history.replaceState(null, '', location.pathname + (rest ? '?' + rest : '') + location.hash);
    if (!embedded) storage('setItem', token);
    return token;
  }

  function storage(method, ...args) {
    try {
      return sessionStorage[method](TOKEN_STORE, ...args);
    } catch {
      return null; // storage disabled: a reload then needs the link again
    }
  }

  function onMessage(event) {
    if (embedded && event.source === window.parent) onParentMessage(event);
    else if (state.popup && event.source === state.popup && event.origin === new URL(api).origin) onCallbackMessage(event);
  }

  function onParentMessage(event) {
    const data = event.data;
    if (!isObject(data) || data.type !== 'session_token') return;
    if (typeof data.sessionToken !== 'string' || !TOKEN_PATTERN.test(data.sessionToken)) return;
    // Later events go to this origin only; a sandboxed parent has none to name.
    state.parentOrigin = event.origin && event.origin !== 'null' ? event.origin : '*';
    useToken(data.sessionToken);
  }

  function tell(message, origin = state.parentOrigin) {
    if (embedded) window.parent.postMessage(message, origin);
  }

  function canClose() {
    return embedded || window.opener !== null;
  }

  function close() {
    cancelFlow();
    if (embedded) tell({ type: 'close' });
    else window.close();
  }

  // --- the session

  function useToken(token) {
    if (!TOKEN_PATTERN.test(token)) return fail('This link is not valid. Ask the application for a new link.');
    if (token === state.token) return;
    cancelFlow();
    state.token = token;
    void load(++state.generation);
  }

  async function load(generation) {
    render('Connect an account', [status('Loading\u2026')]);
    let session, listed, providers;
    try {
      const replies = await Promise.all([get('/connect/session'), get('/integrations')]);
      session = isObject(replies[0].data) ? replies[0].data : {};
      listed = Array.isArray(replies[1].data) ? replies[1].data.filter(isObject) : [];
      // Every definition up front, so that a click can open a sign-in window at once.
      const names = [...new Set(listed.map((item) => String(item.provider)))];
      providers = await Promise.all(names.map((name) => get('/providers/' + encodeURIComponent(name)).then((r) => [name, r.data], () => [name, null])));
    } catch (problem) {
      if (generation !== state.generation) return;
      const { code, message, status } = asFailure(problem);
      report(code, message);
      return fail(status === 401 ? 'This session has expired or is not valid. Ask the application to start again.' : message);
    }
    if (generation !== state.generation) return;
    const allowed = session.allowed_integrations;
    state.session = session;
    state.providers = new Map(providers);
    state.integrations = listed
      .filter((item) => !Array.isArray(allowed) || allowed.includes(item.unique_key))
      .sort((a, b) => nameOf(a).localeCompare(nameOf(b)));
    state.theme ??= session.connectUISettings?.defaultTheme;
    applyTheme();
    if (state.integrations.length === 1) choose(state.integrations[0], false);
    else showList();
  }

  function get(path) {
    return send(api + path, { headers: { Authorization: 'Bearer ' + state.token } });
  }

  async function send(url, options) {
    let response, body;
    try {
      response = await fetch(url, { cache: 'no-store', credentials: 'omit', ...options });
      body = await response.json().catch(() => null);
    } catch {
      throw failure('unknown_error', 'Could not reach the server. Check your connection and try again.');
    }
    if (response.ok && isObject(body)) return body;
    const error = isObject(body?.error) ? body.error : {};
    throw failure(textOr(error.code, 'unknown_error'), textOr(error.message, `The server answered ${response.status}.`), response.status);
  }

  // --- choosing

  function showList() {
    cancelFlow();
    backButton.hidden = true;
    const items = state.integrations.map((integration) => h('li', {},
      h('button', { type: 'button', class: 'choice', 'data-key': integration.unique_key, onclick: () => choose(integration, true) },
        logo(integration), h('span', {}, nameOf(integration)))));
    render(state.session.isReconnecting ? 'Reconnect an account' : 'Connect an account', items.length
      ? [h('p', { class: 'lead' }, 'Choose the service to connect.'), h('ul', { class: 'choices' }, items)]
      : [h('p', { class: 'problem' }, 'There is nothing to connect in this session.')]);
    const previous = [...view.querySelectorAll('.choice')].find((button) => button.dataset.key === state.chosen);
    if (previous) previous.focus();
  }

  function choose(integration, byClick) {
    state.chosen = integration.unique_key;
    backButton.hidden = state.integrations.length < 2;
    const provider = state.providers.get(String(integration.provider));
    const mode = provider?.auth_mode;
    if (!POPUP_MODES.has(mode) && !FORM_ROUTES[mode]) {
      return render(`Connect ${nameOf(integration)}`, [h('p', { class: 'problem' }, 'This page cannot connect this kind of account yet.')]);
    }
    const fields = formFields(integration, provider);
    // A click still counts as the user's gesture here, so the sign-in window may open now.
    const activated = byClick && (!navigator.userActivation || navigator.userActivation.isActive);
    if (activated && POPUP_MODES.has(mode) && !fields.some(asked)) startPopup(integration, values(fields, new Map()).params);
    else showForm(integration, provider, fields, '');
  }

  // --- forms

  function formFields(integration, provider) {
    const all = state.session.integrations_config_defaults;
    const defaults = (isObject(all) && isObject(all[integration.unique_key]?.connection_config) && all[integration.unique_key].connection_config) || {};
    const config = Object.entries(isObject(provider.connection_config) ? provider.connection_config : {})
      .filter(([, schema]) => schema?.automated !== true)
      .map(([name, schema]) => field('config', name, schema, defaults[name]));
    const credentials = credentialSchemas(integration, provider).map(([name, schema]) => field('credential', name, schema));
    return [...config, ...credentials].sort((a, b) => (a.order === b.order ? 0 : a.order < b.order ? -1 : 1));
  }

  function credentialSchemas(integration, provider) {
    const declared = isObject(provider.credentials) ? provider.credentials : {};
    const own = (name) => (isObject(declared[name]) ? declared[name] : {});
    if (provider.auth_mode === 'BASIC') {
      return [['username', { title: 'Username', ...own('username') }], ['password', { title: 'Password', secret: true, ...own('password') }]];
    }
    if (provider.auth_mode !== 'API_KEY') return [];
    const label = text(integration.credentials_label?.apiKey);
    return [['apiKey', { title: 'API key', secret: true, ...own('apiKey'), ...(label && { title: label }) }]];
  }

  function field(kind, name, schema, preset) {
    const s = isObject(schema) ? schema : {};
    return {
      kind,
      name,
      id: `${kind}-${name.replace(/[^\w-]/g, '_')}`,
      title: text(s.title) || name,
      description: text(s.description),
      example: text(s.example),
      pattern: text(s.pattern),
      format: text(s.format),
      prefix: text(s.prefix),
      suffix: text(s.suffix),
      docSection: text(s.doc_section),
      secret: s.secret === true,
      required: s.optional !== true,
      hidden: s.hidden === true,
      options: Array.isArray(s.enum) ? s.enum.filter((v) => typeof v === 'string') : null,
      visibleWhen: isObject(s.visible_when) ? s.visible_when : null,
      order: typeof s.order === 'number' ? s.order : Infinity,
      initial: text(s.default_value),
      preset: typeof preset === 'string' ? preset : undefined, // from the session: not asked
    };
  }

  function asked(f) {
    return f.preset === undefined && !f.hidden;
  }

  function showForm(integration, provider, fields, notice) {
    const entries = fields.filter(asked).map((f) => fieldRow(f, provider));
    const context = {
      integration,
      mode: provider.auth_mode,
      fields,
      entries,
      tried: false,
      summary: h('p', { class: 'summary', role: 'alert' }),
      problem: h('p', { class: 'problem', role: 'alert' }, notice),
      submit: h('button', { type: 'submit', class: 'primary' }, 'Connect'),
    };
    const form = h('form', { novalidate: '', onsubmit: (event) => { event.preventDefault(); onSubmit(context); } },
      entries.some((e) => e.field.required) && h('p', { class: 'hint' }, 'Fields marked * are required.'),
      context.summary, entries.map((e) => e.row), context.problem, context.submit);
    form.addEventListener('input', (event) => onInput(context, event));
    form.addEventListener('change', (event) => onInput(context, event));
    const name = nameOf(integration);
    const docs = docsURL(provider, '');
    render(`Connect ${name}`, [
      h('p', { class: 'lead' }, leadFor(context.mode, name, entries.length > 0),
        docs && entries.length > 0 && [' ', link(docs, 'How to find them')]),
      form,
    ], logo(integration));
    updateVisibility(context);
  }

  function leadFor(mode, name, asks) {
    if (POPUP_MODES.has(mode)) return `You will sign in to ${name} in a new window.`;
    return asks ? `Enter the details of your ${name} account.` : `${name} needs no sign-in.`;
  }

  function fieldRow(f, provider) {
    const control = f.options
      ? h('select', { id: f.id }, h('option', { value: '' }, 'Choose\u2026'), f.options.map((option) => h('option', { value: option }, option)))
      : h('input', { id: f.id, type: f.secret ? 'password' : 'text', autocomplete: 'off', spellcheck: 'false', autocapitalize: 'none', placeholder: f.example });
    control.value = f.initial;
    control.required = f.required;
    if (f.format === 'email') control.inputMode = 'email';
    const docs = f.docSection && docsURL(provider, f.docSection);
    const hint = (f.description || docs) && h('p', { id: `${f.id}-hint`, class: 'hint' }, f.description, docs && [' ', link(docs, 'Where to find this')]);
    const affix = (value, end) => value && h('span', { class: 'affix', id: `${f.id}-${end}` }, value);
    const entry = {
      field: f,
      control,
      // Read with the field: what surrounds the value, then the help, then any error.
      described: [f.prefix && `${f.id}-prefix`, f.suffix && `${f.id}-suffix`, hint && hint.id].filter(Boolean),
      error: h('p', { id: `${f.id}-error`, class: 'error' }),
    };
    entry.row = h('div', { class: 'field' },
      h('label', { for: f.id }, f.title, f.required ? h('span', { class: 'required', 'aria-hidden': 'true' }, ' *') : h('span', { class: 'hint' }, ' (optional)')),
      hint, h('div', { class: 'affixed' }, affix(f.prefix, 'prefix'), control, affix(f.suffix, 'suffix')), entry.error);
    setError(entry, '');
    return entry;
  }

  function onInput(context, event) {
    updateVisibility(context);
    const entry = context.entries.find((e) => e.control === event.target);
    if (entry && context.tried) setError(entry, problemWith(entry.field, read(entry)));
  }

  function updateVisibility(context) {
    const current = new Map(context.entries.map((e) => [e.field.name, read(e)]));
    for (const { field: f, row } of context.entries) {
      row.hidden = f.visibleWhen !== null && current.get(String(f.visibleWhen.field)) !== String(f.visibleWhen.equals);
    }
  }

  function read(entry) {
    // Pasted values often carry stray spaces; a password may really end in one.
    return entry.field.name === 'password' ? entry.control.value : entry.control.value.trim();
  }

  function problemWith(f, value) {
    const example = f.example && !f.secret ? ` For example: ${f.example}` : '';
    if (value === '') return f.required ? `Enter ${f.title}.` : '';
    if (value.length > MAX_LENGTH) return `${f.title} must be at most ${MAX_LENGTH} characters.`;
    if (f.pattern && !matches(f.pattern, value)) return `${f.title} does not have the expected form.${example}`;
    if (FORMATS[f.format]?.(value) === false) return `${f.title} must be a valid ${f.format}.${example}`;
    return '';
  }

  function matches(pattern, value) {
    try {
      return new RegExp(pattern).test(value);
    } catch {
      return true; // a pattern this browser cannot read is left to the server
    }
  }

  function setError(entry, message) {
    entry.error.textContent = message;
    entry.control.setAttribute('aria-invalid', String(Boolean(message)));
    const ids = message ? [...entry.described, entry.error.id] : entry.described;
    if (ids.length) entry.control.setAttribute('aria-describedby', ids.join(' '));
    else entry.control.removeAttribute('aria-describedby');
  }

  function onSubmit(context) {
    context.tried = true;
    context.problem.textContent = '';
    const typed = new Map();
    const invalid = [];
    for (const entry of context.entries.filter((e) => !e.row.hidden)) {
      const value = read(entry);
      const message = problemWith(entry.field, value);
      setError(entry, message);
      if (message) invalid.push(entry);
      else typed.set(entry.field.name, value);
    }
    context.summary.textContent = invalid.length > 1 ? `${invalid.length} fields need your attention.` : invalid.length ? 'One field needs your attention.' : '';
    if (invalid.length) return invalid[0].control.focus();
    const { params, credentials } = values(context.fields, typed);
    if (POPUP_MODES.has(context.mode)) startPopup(context.integration, params);
    else void sendCredentials(context, credentials, params);
  }

  function values(fields, typed) {
    const params = {};
    const credentials = {};
    for (const f of fields) {
      const value = typed.has(f.name) ? typed.get(f.name) : f.preset ?? (f.hidden ? f.initial : undefined);
      if (value !== undefined) (f.kind === 'config' ? params : credentials)[f.name] = value;
    }
    return { params, credentials };
  }

  async function sendCredentials(context, credentials, params) {
    const { integration, mode, submit } = context;
    const body = mode === 'API_KEY' ? { apiKey: credentials.apiKey ?? '' } : mode === 'BASIC' ? { username: credentials.username ?? '', password: credentials.password ?? '' } : {};
    const generation = state.generation;
    submit.disabled = true;
    submit.textContent = 'Connecting\u2026';
    try {
      const url = authURL(FORM_ROUTES[mode], integration.unique_key, params, {});
      const reply = await send(url, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body) });
      if (generation === state.generation) succeed(integration, { providerConfigKey: textOr(reply.providerConfigKey, integration.unique_key), connectionId: text(reply.connectionId) });
    } catch (problem) {
      if (generation !== state.generation) return;
      const { code, message } = asFailure(problem);
      submit.disabled = false;
      submit.textContent = 'Connect';
      context.problem.textContent = message;
      report(code, message);
    }
  }

  function authURL(route, key, params, extra) {
    const search = new URLSearchParams({ connect_session_token: state.token, ...extra });
    for (const [name, value] of Object.entries(params)) search.append(`params[${name}]`, value);
    return `${api}${route}${encodeURIComponent(key)}?${search}`;
  }

  // --- the sign-in window

  function startPopup(integration, params) {
    cancelFlow();
    // Opened before anything asynchronous: browsers allow it only while handling the click.
    const popup = window.open('', '_blank', popupFeatures(500, 600));
    const flow = { integration, params, popup, socket: null, timer: 0, done: false, answered: false, generation: state.generation };
    state.flow = flow;
    state.popup = popup;
    if (!popup) return finish(flow, ['blocked_by_browser', 'The browser blocked the sign-in window. Allow pop-ups for this page and try again.']);
    showWaiting(integration);
    try {
      flow.socket = new WebSocket(new URL(api).origin.replace(/^http/, 'ws') + '/');
    } catch {
      return finish(flow, ['unknown_error', 'Could not reach the server. Try again.']);
    }
    flow.socket.addEventListener('message', (event) => onSocketMessage(flow, event));
    flow.socket.addEventListener('close', () => finish(flow, ['unknown_error', 'The connection to the server closed before the sign-in finished. Try again.']));
    flow.timer = setInterval(() => watchPopup(flow), POPUP_POLL_MS);
  }

  function popupFeatures(width, height) {
    const w = Math.min(width, screen.width);
    const h = Math.min(height, screen.height);
    return `width=${w},height=${h},left=${Math.max(0, (screen.width - w) / 2)},top=${Math.max(0, (screen.height - h) / 2)},scrollbars=yes,resizable=yes`;
  }

  function onSocketMessage(flow, event) {
    let data = null;
    try {
      data = JSON.parse(event.data);
    } catch {
      /* not ours */
    }
    const key = flow.integration.unique_key;
    if (!isObject(data) || flow.done) return;
    if (data.message_type === 'connection_ack' && typeof data.ws_client_id === 'string') {
      flow.popup.location.href = authURL('/oauth/connect/', key, flow.params, { ws_client_id: data.ws_client_id });
    } else if (data.message_type === 'success') {
      const result = { providerConfigKey: textOr(data.provider_config_key, key), connectionId: text(data.connection_id) };
      if (data.is_pending === true) result.isPending = true;
      finish(flow, result);
    } else if (data.message_type === 'error') {
      finish(flow, [textOr(data.error_type, 'unknown_error'), textOr(data.error_desc, 'The sign-in failed.')]);
    }
  }

  function onCallbackMessage(event) {
    const { type, payload } = isObject(event.data) ? event.data : {};
    if (type !== 'nango_oauth_callback_success' && type !== 'nango_oauth_callback_error') return;
    // Acknowledged even when the socket already ended the flow: the window then closes itself.
    event.source.postMessage({ type: 'nango_oauth_callback_ack' }, event.origin);
    const flow = state.flow;
    if (!flow || flow.popup !== event.source) return;
    // On success the result, with the connection id, comes on the socket.
    if (type === 'nango_oauth_callback_success') flow.answered = true;
    else finish(flow, [textOr(payload?.errorType, 'unknown_error'), textOr(payload?.message, 'The sign-in failed.')]);
  }

  function watchPopup(flow) {
    if (flow.done || flow.answered || !flow.popup.closed) return;
    if (closeOnWindowClosed) return finish(flow, ['window_closed', 'The sign-in window was closed before the sign-in finished.']);
    clearInterval(flow.timer);
    const note = view.querySelector('.status');
    if (note) note.textContent = 'The sign-in window was closed. If you did not finish signing in, try again.';
  }

  function showWaiting(integration) {
    const name = nameOf(integration);
    backButton.hidden = true;
    render(`Connecting ${name}`, [
      status(`Finish signing in to ${name} in the window that opened.`),
      h('div', { class: 'actions' },
        h('button', { type: 'button', class: 'primary', onclick: () => startPopup(integration, state.flow?.params ?? {}) }, 'Try again'),
        h('button', { type: 'button', class: 'ghost', onclick: () => { cancelFlow(); choose(integration, false); } }, 'Cancel')),
    ], logo(integration));
  }

  /* Ends a flow once, with a result or an [errorType, message] pair. */
  function finish(flow, outcome) {
    if (flow.done) return;
    stop(flow);
    // The callback page may still be posting to this page: give it a moment before closing it.
    if (flow.popup) setTimeout(() => closeWindow(flow.popup), POPUP_POLL_MS);
    if (flow.generation !== state.generation) return;
    if (!Array.isArray(outcome)) return succeed(flow.integration, outcome);
    const provider = state.providers.get(String(flow.integration.provider));
    report(...outcome);
    backButton.hidden = state.integrations.length < 2;
    showForm(flow.integration, provider, formFields(flow.integration, provider), outcome[1]);
  }

  function stop(flow) {
    flow.done = true;
    clearInterval(flow.timer);
    if (flow.socket && flow.socket.readyState <= WebSocket.OPEN) flow.socket.close();
    if (state.flow === flow) state.flow = null;
  }

  function cancelFlow() {
    if (!state.flow) return;
    if (state.flow.popup) closeWindow(state.flow.popup);
    stop(state.flow);
  }

  function closeWindow(popup) {
    try {
      if (!popup.closed) popup.close();
    } catch {
      /* a window on another origin may refuse; it closes itself */
    }
  }

  // --- outcomes

  function succeed(integration, result) {
    backButton.hidden = true;
    tell({ type: 'connect', payload: result });
    render('Connected', [
      h('p', { class: 'lead success' }, `Your ${nameOf(integration)} account is connected.`),
      canClose() ? h('button', { type: 'button', class: 'primary', onclick: close }, 'Done') : h('p', { class: 'hint' }, 'You can close this window.'),
    ], logo(integration));
  }

  function report(errorType, errorMessage) {
    tell({ type: 'error', payload: { errorType, errorMessage } });
  }

  function fail(message) {
    backButton.hidden = true;
    render('Cannot connect', [h('p', { class: 'problem' }, message)]);
  }

  function failure(code, message, status = 0) {
    return { code, message, status, known: true };
  }

  function asFailure(problem) {
    return problem?.known ? problem : failure('unknown_error', 'Something went wrong. Try again.');
  }

  // --- rendering

  function render(title, body, badge = null) {
    const heading = h('h1', { id: 'title', tabindex: '-1' }, badge, h('span', {}, title));
    view.replaceChildren(heading, ...body.filter(Boolean));
    document.title = title;
    heading.focus(); // keyboard and screen-reader users start at the new content
  }

  function status(message) {
    return h('p', { class: 'status', role: 'status' }, message);
  }

  function logo(integration) {
    const tile = h('span', { class: 'logo', 'aria-hidden': 'true' }, h('span', {}, nameOf(integration).slice(0, 1).toUpperCase()));
    const source = webURL(text(integration.logo));
    if (source) {
      // Shown once loaded: a missing logo leaves the initial rather than a broken image.
      const image = h('img', { alt: '' });
      image.addEventListener('load', () => tile.classList.add('loaded'));
      image.src = source.href;
      tile.append(image);
    }
    return tile;
  }

  function link(href, label) {
    return h('a', { href, target: '_blank', rel: 'noopener noreferrer' }, label);
  }

  function nameOf(integration) {
    return textOr(integration.display_name, textOr(integration.unique_key, 'this service'));
  }

  function docsURL(provider, section) {
    const base = webURL(text(provider.docs_connect) || (section ? '' : text(provider.docs)));
    if (base && section) base.hash = section.replace(/^#/, '');
    return base && base.href;
  }

  function applyTheme() {
    const dark = state.theme === 'dark' || (state.theme !== 'light' && darkSystem.matches);
    document.documentElement.dataset.theme = dark ? 'dark' : 'light';
  }

  /* Builds an element. Text always goes in as text nodes, never as markup: names and
     descriptions come from configuration and must not become HTML. */
  function h(tag, attributes, ...children) {
    const element = document.createElement(tag);
    for (const [name, value] of Object.entries(attributes)) {
      if (name.startsWith('on')) element.addEventListener(name.slice(2), value);
      else if (value !== '' || name === 'novalidate' || name === 'value') element.setAttribute(name, value);
    }
    element.append(...children.flat(2).filter((child) => child || child === 0));
    return element;
  }

  function webURL(raw) {
    try {
      const url = new URL(raw);
      return ['https:', 'http:'].includes(url.protocol) ? url : null;
    } catch {
      return null;
    }
  }

  function isObject(value) {
    return typeof value === 'object' && value !== null && !Array.isArray(value);
  }

  function text(value) {
    return typeof value === 'string' ? value : '';
  }

  function textOr(value, fallback) {
    return typeof value === 'string' && value !== '' ? value : fallback;
  }

  start();
})();
