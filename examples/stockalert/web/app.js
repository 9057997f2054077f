// The stock alert page: a user sets "tell me when SYMBOL moves ±X %",
// watches prices (topic "prices") and sees alerts arrive in their inbox.
// The backend mints the Herald token (/api/session) and pushes the alerts.
'use strict';

const q = new URLSearchParams(location.search);
const user = q.get('user') || 'alice';
const $ = (id) => document.getElementById(id);
/** State the page shows, also read by the browser test. */
const page = (window.stockalert = { user, state: 'loading', quotes: {}, alerts: [], errors: [] });

async function api(method, path, body) {
  const res = await fetch(path, {
    method,
    headers: body ? { 'Content-Type': 'application/json' } : {},
    body: body ? JSON.stringify(body) : undefined,
  });
  const json = await res.json();
  if (!res.ok) throw new Error(json.error || res.statusText);
  return json;
}

const money = (cents) => (cents / 100).toFixed(2);
const pct = (q) => ((q.price - q.ref) / q.ref) * 100;
const signed = (x) => (x > 0 ? '+' : x < 0 ? '−' : '') + Math.abs(x).toFixed(2) + ' %';

function renderQuotes() {
  const rows = Object.values(page.quotes).sort((a, b) => a.symbol.localeCompare(b.symbol));
  $('quotes').replaceChildren(...rows.map((qt) => {
    const tr = document.createElement('tr');
    const c = pct(qt);
    tr.className = qt.symbol === $('symbol').value ? 'selected' : '';
    tr.innerHTML = `<td class="sym"></td><td>${money(qt.price)}</td><td class="${c > 0 ? 'up' : c < 0 ? 'down' : ''}">${signed(c)}</td>`;
    tr.firstChild.textContent = qt.symbol;
    tr.firstChild.onclick = () => { $('symbol').value = qt.symbol; symbolChanged(); };
    return tr;
  }));
}

function symbolChanged() {
  $('move-symbol').textContent = $('symbol').value;
  renderQuotes();
}

async function loadAlerts() {
  const { alerts } = await api('GET', '/api/alerts?user=' + encodeURIComponent(user));
  $('my-alerts').replaceChildren(...alerts.map((a) => {
    const li = document.createElement('li');
    li.textContent = `${a.symbol} ±${a.pct} %`;
    return li;
  }));
}

function showAlert(msg) {
  const a = msg.data;
  if (!a || a.type !== 'alert') return;
  page.alerts.push({ seq: msg.seq, id: msg.id, ...a });
  const li = document.createElement('li');
  const change = ((a.price - a.ref) / a.ref) * 100;
  li.innerHTML = `<b></b> <span class="${a.dir}"></span><span class="meta"></span>`;
  li.children[0].textContent = a.symbol;
  li.children[1].textContent = `crossed ${a.dir === 'up' ? '+' : '−'}${a.bp / 100} %: ${money(a.price)} (${signed(change)})`;
  li.children[2].textContent = `inbox #${msg.seq} · ${new Date(msg.time).toLocaleTimeString()}`;
  $('alerts').prepend(li);
  $('no-alerts').hidden = true;
}

async function main() {
  $('user').textContent = user;
  const { quotes } = await api('GET', '/api/quotes');
  for (const qt of quotes) page.quotes[qt.symbol] = qt;
  $('symbol').replaceChildren(...quotes.map((qt) => new Option(qt.symbol, qt.symbol)));
  $('symbol').onchange = symbolChanged;
  symbolChanged();
  await loadAlerts();

  const session = await api('POST', '/api/session', { user });
  const herald = (window.herald = new Herald({
    endpoints: session.ws,
    token: session.token,
    getToken: async () => (await api('POST', '/api/session', { user })).token,
    storagePrefix: `stockalert:${user}:`, // one device id and inbox position per user in this browser
  }));
  const setState = (s) => { page.state = s; $('state').textContent = s; $('state').className = 'state ' + s; };
  herald.on('connecting', () => setState('connecting'));
  herald.on('connected', () => setState('connected'));
  herald.on('disconnected', () => setState('disconnected'));
  herald.on('error', (e) => page.errors.push(e.message));
  herald.on('push', showAlert);
  herald.subscribe(session.topic).on('publication', (msg) => {
    for (const [sym, price] of Object.entries(msg.data.prices || {})) {
      if (page.quotes[sym]) page.quotes[sym].price = price;
    }
    renderQuotes();
  });
  herald.connect();

  $('alert-form').onsubmit = async (ev) => {
    ev.preventDefault();
    await api('POST', '/api/alerts', { user, symbol: $('symbol').value, pct: Number($('pct').value) });
    await loadAlerts();
  };
  $('move-form').onsubmit = async (ev) => {
    ev.preventDefault();
    const r = await api('POST', '/api/move', { symbol: $('symbol').value, pct: Number($('move-pct').value) });
    $('move-result').textContent = `${r.symbol}: ${money(r.from)} → ${money(r.to)}, ${r.alerts} alert(s) pushed to all users`;
  };
}

main().catch((e) => { page.errors.push(String(e)); $('state').textContent = 'error: ' + e.message; });
