/* ecrec storefront demo: plain JS, talks only to the public /v1 HTTP API.
   All data is inserted with textContent (never innerHTML). */
(function () {
  'use strict';

  // ---------------------------------------------------------------- i18n
  const STR = {
    zh: {
      shopName: 'ecrec 商城', skip: '跳到商品', user: '用户', newUser: '换个用户',
      keySet: '已设置 API key', keyChange: '更换', keyHint: '此服务需要 API key。', keySave: '保存',
      keySaved: 'API key 已保存（仅本标签页）',
      searchLabel: '搜索商品', searchPh: '例如：拍照好的手机', searchBtn: '搜索', clearSearch: '清除搜索',
      categories: '分类', all: '全部', products: '商品', resultsFor: '“{q}” 的搜索结果（{n}）',
      more: '加载更多', empty: '没有找到商品', loading: '加载中…', nothing: '暂无',
      like: '喜欢', cart: '加入购物车', buy: '购买', dislike: '不感兴趣',
      done_click: '已标记喜欢', done_cart: '已加入购物车', done_purchase: '已下单（演示）',
      done_dislike: '好的，会少推荐这类商品', stock0: '缺货', close: '关闭',
      similar: '相似商品', guidesRel: '相关指南', rating: '评分',
      forYou: '为你推荐', coldStart: '新朋友，先看看热门好物', updated: '已更新', latest: '最近：',
      guides: '指南与文章', kind_guide: '指南', kind_article: '文章', kind_review: '评测',
      linked: '文中提到的商品',
      write: '说点什么', typeLabel: '类型', writeLabel: '你的评价、问题或反馈',
      type_review: '评价', type_question: '提问', type_feedback: '反馈',
      about: '关于这个商品：', send: '发送', history: '你说过的话', intent: '意图',
      positive: '好评', neutral: '中评', negative: '差评',
      chat: '智能客服', chatLabel: '输入消息', chatPh: '问我任何购物问题…', chatSend: '发送',
      chatHide: '收起', chatShow: '展开', chatHello: '你好！想找点什么？可以直接问我。',
      escalate: '已为你转接人工客服', you: '你', bot: '客服',
      newUserDone: '已切换到新用户', network: '网络错误，请检查连接', busy: '服务繁忙，请稍后重试',
      busyIn: '服务繁忙，请 {s} 秒后重试', authNeeded: '需要 API key', error: '出错了',
      footer: 'ecrec 实时个性化推荐演示',
    },
    en: {
      shopName: 'ecrec Store', skip: 'Skip to products', user: 'Shopper', newUser: 'New shopper',
      keySet: 'API key set', keyChange: 'Change', keyHint: 'This server needs an API key.', keySave: 'Save',
      keySaved: 'API key saved (this tab only)',
      searchLabel: 'Search products', searchPh: 'e.g. a phone with a great camera', searchBtn: 'Search',
      clearSearch: 'Clear search', categories: 'Categories', all: 'All', products: 'Products',
      resultsFor: 'Results for “{q}” ({n})', more: 'Load more', empty: 'No products found',
      loading: 'Loading…', nothing: 'Nothing yet',
      like: 'Like', cart: 'Add to cart', buy: 'Buy', dislike: 'Not for me',
      done_click: 'Liked', done_cart: 'Added to cart', done_purchase: 'Purchased (demo)',
      done_dislike: 'Got it, fewer like this', stock0: 'Out of stock', close: 'Close',
      similar: 'Similar', guidesRel: 'Guides', rating: 'Rating',
      forYou: 'For you', coldStart: 'New here? Popular picks to start', updated: 'Updated', latest: 'Latest: ',
      guides: 'Guides & articles', kind_guide: 'Guide', kind_article: 'Article', kind_review: 'Review',
      linked: 'Products in this guide',
      write: 'Tell us', typeLabel: 'Type', writeLabel: 'Your review, question or feedback',
      type_review: 'Review', type_question: 'Question', type_feedback: 'Feedback',
      about: 'About this product: ', send: 'Send', history: 'Your words', intent: 'Intent',
      positive: 'positive', neutral: 'neutral', negative: 'negative',
      chat: 'Shopping assistant', chatLabel: 'Your message', chatPh: 'Ask me anything about shopping…',
      chatSend: 'Send', chatHide: 'Hide', chatShow: 'Show', chatHello: 'Hi! What are you looking for?',
      escalate: 'Handing you to a human agent', you: 'You', bot: 'Assistant',
      newUserDone: 'Switched to a new shopper', network: 'Network error, check your connection',
      busy: 'Server busy, please retry', busyIn: 'Server busy, retry in {s} s',
      authNeeded: 'API key needed', error: 'Something went wrong',
      footer: 'ecrec real-time personalization demo',
    },
  };
  const CATS = [
    ['phones', '手机', 'Phones'], ['laptops', '笔记本', 'Laptops'], ['cameras', '相机', 'Cameras'],
    ['headphones', '耳机', 'Headphones'], ['home', '家居', 'Home'], ['clothing', '服饰', 'Clothing'],
    ['beauty', '美妆', 'Beauty'], ['books', '图书', 'Books'], ['sports', '运动', 'Sports'],
    ['toys', '玩具', 'Toys'], ['food', '食品', 'Food'], ['power', '充电电源', 'Power'],
  ];
  const CAT_HUE = {};
  CATS.forEach((c, i) => { CAT_HUE[c[0]] = (i * 30 + 10) % 360; });

  // ---------------------------------------------------------------- state
  const LS_USER = 'ecrec.user', LS_LANG = 'ecrec.lang', SS_KEY = 'ecrec.key', SS_CHAT = 'ecrec.chat.session';
  const state = {
    lang: 'zh', user: '', cfg: { auth_required: false, read_requires_key: false, chat: true },
    mode: 'browse', category: '', query: '', offset: 0, total: 0, shown: [],
    detailId: null, lastMood: null, railSig: '', railVersion: 0,
    gridSeq: 0, recSeq: 0, detailSeq: 0, gridLoaded: false,
  };
  const itemCache = new Map();
  const $ = (id) => document.getElementById(id);

  function t(key, vars) {
    let s = (STR[state.lang] && STR[state.lang][key]) || STR.en[key] || key;
    if (vars) Object.keys(vars).forEach((k) => { s = s.split('{' + k + '}').join(String(vars[k])); });
    return s;
  }
  function catLabel(cat) {
    const c = CATS.find((x) => x[0] === cat);
    return c ? (state.lang === 'zh' ? c[1] : c[2]) : String(cat || '');
  }

  // Small DOM builder: children that are strings become text nodes (safe).
  function el(tag, props, ...kids) {
    const node = document.createElement(tag);
    if (props) {
      Object.keys(props).forEach((k) => {
        const v = props[k];
        if (v === undefined || v === null || v === false) return;
        if (k === 'class') node.className = v;
        else if (k === 'text') node.textContent = v;
        else if (k === 'on') Object.keys(v).forEach((ev) => node.addEventListener(ev, v[ev]));
        else if (k.startsWith('data-') || k.startsWith('aria-') || k === 'role' || k === 'lang') node.setAttribute(k, v);
        else node[k] = v;
      });
    }
    kids.flat().forEach((c) => {
      if (c === null || c === undefined || c === false) return;
      node.appendChild(typeof c === 'string' || typeof c === 'number' ? document.createTextNode(String(c)) : c);
    });
    return node;
  }
  const clear = (node) => { node.replaceChildren(); return node; };
  const fmtPrice = (p) => (typeof p === 'number' && isFinite(p) ? '¥' + p.toFixed(p % 1 ? 2 : 0) : '');
  const topCat = (cats) => (Array.isArray(cats) && cats.length ? cats[0] : '');

  function randomHex(n) {
    const a = new Uint8Array(n);
    (window.crypto || {}).getRandomValues ? crypto.getRandomValues(a) : a.forEach((_, i) => { a[i] = Math.random() * 256; });
    return Array.from(a, (b) => b.toString(16).padStart(2, '0')).join('');
  }
  function safeGet(store, k) { try { return store.getItem(k); } catch (e) { return null; } }
  function safeSet(store, k, v) { try { v === null ? store.removeItem(k) : store.setItem(k, v); } catch (e) { /* private mode */ } }

  // ---------------------------------------------------------------- status / api
  let statusTimer = 0;
  function showStatus(msg, kind) {
    const box = $('status');
    box.textContent = msg;
    box.className = 'status status-' + (kind || 'info');
    box.hidden = false;
    clearTimeout(statusTimer);
    statusTimer = setTimeout(() => { box.hidden = true; }, kind === 'error' ? 8000 : 3000);
  }

  function detailText(data) {
    if (!data) return '';
    if (typeof data === 'string') return data;
    const d = data.detail;
    if (typeof d === 'string') return d;
    if (Array.isArray(d)) return d.map((x) => (x && x.msg) || JSON.stringify(x)).join('; ');
    return d ? JSON.stringify(d) : '';
  }

  async function api(method, path, body) {
    const headers = { Accept: 'application/json' };
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    const key = safeGet(sessionStorage, SS_KEY);
    if (key) headers.Authorization = 'Bearer ' + key;
    let res;
    try {
      res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    } catch (e) {
      const err = new Error(t('network')); err.status = 0; err.detail = String((e && e.message) || e); throw err;
    }
    const raw = await res.text();
    let data = null;
    if (raw) { try { data = JSON.parse(raw); } catch (e) { data = raw; } }
    if (!res.ok) {
      const err = new Error(detailText(data) || res.statusText || t('error'));
      err.status = res.status; err.detail = err.message; err.retryAfter = res.headers.get('Retry-After');
      throw err;
    }
    return data;
  }

  function handleError(err) {
    if (!err) return;
    const status = err.status;
    if (status === 401 || status === 403) {
      showKeyForm(err.detail || t('authNeeded'));
      showStatus(status + ' · ' + (err.detail || t('authNeeded')), 'error');
    } else if (status === 503) {
      showStatus(err.retryAfter ? t('busyIn', { s: err.retryAfter }) : t('busy'), 'error');
    } else {
      showStatus((status ? status + ' · ' : '') + (err.detail || err.message || t('error')), 'error');
    }
    if (window.console) console.warn('[ecrec]', status, err.message);
  }

  // Run fn with the given buttons disabled; errors go to the status line.
  async function busy(buttons, fn) {
    const list = (Array.isArray(buttons) ? buttons : [buttons]).filter(Boolean);
    list.forEach((b) => { b.disabled = true; });
    try { return await fn(); } catch (e) { handleError(e); return undefined; } finally {
      list.forEach((b) => { b.disabled = false; });
    }
  }

  // ---------------------------------------------------------------- key / user / language
  function showKeyForm(note) {
    $('key-form').hidden = false;
    $('key-state').hidden = true;
    $('key-note').textContent = note || t('keyHint');
    $('key-input').focus();
  }
  function updateKeyState() {
    const has = !!safeGet(sessionStorage, SS_KEY);
    $('key-state').hidden = !(has && state.cfg.auth_required) || !$('key-form').hidden;
  }

  function setUser(id) {
    state.user = id;
    safeSet(localStorage, LS_USER, id);
    $('user-id').textContent = id;
  }

  function applyLang(lang) {
    state.lang = lang === 'en' ? 'en' : 'zh';
    safeSet(localStorage, LS_LANG, state.lang);
    document.documentElement.lang = state.lang === 'zh' ? 'zh-CN' : 'en';
    document.title = t('shopName') + (state.lang === 'zh' ? ' / ecrec Store' : ' / ecrec 商城');
    document.querySelectorAll('[data-i18n]').forEach((n) => { n.textContent = t(n.getAttribute('data-i18n')); });
    document.querySelectorAll('[data-i18n-ph]').forEach((n) => { n.placeholder = t(n.getAttribute('data-i18n-ph')); });
    document.querySelectorAll('[data-i18n-aria]').forEach((n) => { n.setAttribute('aria-label', t(n.getAttribute('data-i18n-aria'))); });
    document.querySelectorAll('.lang-btn').forEach((b) => b.setAttribute('aria-pressed', String(b.dataset.lang === state.lang)));
    const chatOpen = $('chat-toggle').getAttribute('aria-expanded') === 'true';
    $('chat-toggle').textContent = t(chatOpen ? 'chatHide' : 'chatShow');
    renderChips();
    renderGrid();
    renderMood();
    renderHistoryLabels();
  }

  // ---------------------------------------------------------------- product grid
  function renderChips() {
    const box = clear($('chips'));
    [['', t('all')]].concat(CATS.map((c) => [c[0], catLabel(c[0])])).forEach(([cat, label]) => {
      box.appendChild(el('button', {
        type: 'button', class: 'chip', text: label, 'data-category': cat,
        'aria-pressed': String(state.mode === 'browse' && state.category === cat),
        on: { click: () => { state.category = cat; loadBrowse(false); } },
      }));
    });
  }

  async function loadBrowse(append) {
    if (state.mode === 'search') $('search-input').value = '';
    state.mode = 'browse'; state.query = '';
    $('search-clear').hidden = true;
    if (!append) { state.offset = 0; state.shown = []; renderChips(); }
    const seq = ++state.gridSeq;
    const q = new URLSearchParams({ k: '24', offset: String(state.offset) });
    if (state.category) q.set('category', state.category);
    $('grid').setAttribute('aria-busy', 'true');
    try {
      const data = await api('GET', '/v1/items?' + q.toString());
      if (seq !== state.gridSeq) return;
      const items = (data && data.items) || [];
      items.forEach((it) => itemCache.set(it.id, it));
      state.shown = (append ? state.shown : []).concat(items.map((it) => it.id));
      state.total = (data && data.total) || state.shown.length;
      state.offset = state.shown.length;
      state.gridLoaded = true;
      renderGrid();
    } catch (e) { if (seq === state.gridSeq) { state.gridLoaded = true; handleError(e); renderGrid(); } } finally {
      if (seq === state.gridSeq) $('grid').setAttribute('aria-busy', 'false');
    }
  }

  async function runSearch(query) {
    const seq = ++state.gridSeq;
    const data = await api('POST', '/v1/search', { query, user_id: state.user, k: 12 });
    if (seq !== state.gridSeq) return;
    state.mode = 'search'; state.query = query;
    state.shown = ((data && data.items) || []).map((h) => {
      if (!itemCache.has(h.item_id)) itemCache.set(h.item_id, { id: h.item_id, title: h.title, price: h.price, category: h.category, partial: true });
      return h.item_id;
    });
    $('search-clear').hidden = false;
    $('grid').setAttribute('aria-busy', 'false');
    renderChips();
    renderGrid();
    refreshPersonal();
  }

  function renderGrid() {
    const grid = clear($('grid'));
    $('grid-title').textContent = state.mode === 'search'
      ? t('resultsFor', { q: state.query, n: state.shown.length })
      : (state.category ? catLabel(state.category) : t('products'));
    if (!state.shown.length) grid.appendChild(el('p', { class: 'empty', text: t(state.gridLoaded ? 'empty' : 'loading') }));
    state.shown.forEach((id) => { const it = itemCache.get(id); if (it) grid.appendChild(renderCard(it)); });
    $('load-more').hidden = !(state.mode === 'browse' && state.shown.length < state.total);
  }

  function thumb(cat, title) {
    const box = el('div', { class: 'thumb', 'aria-hidden': 'true' }, el('span', { text: (title || '?').trim().charAt(0) }));
    box.style.setProperty('--hue', String(CAT_HUE[cat] !== undefined ? CAT_HUE[cat] : 210));
    return box;
  }

  function actionButtons(id) {
    const mk = (type, label, cls) => el('button', {
      type: 'button', class: 'btn btn-small ' + cls, text: label, 'data-event': type, 'data-item-id': id,
    });
    return el('div', { class: 'actions' },
      mk('click', '♡ ' + t('like'), 'btn-ghost act-like'), mk('cart', t('cart'), 'btn-secondary act-cart'),
      mk('purchase', t('buy'), 'btn-primary act-buy'), mk('dislike', t('dislike'), 'btn-ghost act-dislike'));
  }

  function renderCard(it) {
    const cat = topCat(it.category);
    const meta = el('p', { class: 'meta' },
      it.brand ? el('span', { class: 'brand-name', text: it.brand }) : null,
      cat ? el('span', { class: 'cat', text: catLabel(cat) }) : null,
      typeof it.rating === 'number' ? el('span', { class: 'rating', title: t('rating'), text: '★ ' + it.rating.toFixed(1) }) : null);
    return el('article', { class: 'card', 'data-item-id': it.id },
      thumb(cat, it.title),
      el('h3', { class: 'card-title' }, el('button', { type: 'button', class: 'link-btn open-detail', 'data-item-id': it.id, text: it.title || it.id })),
      meta,
      el('p', { class: 'price', text: fmtPrice(it.price) }, it.stock === 0 ? el('span', { class: 'stock0', text: ' · ' + t('stock0') }) : null),
      actionButtons(it.id));
  }

  async function sendEvent(type, itemId, button) {
    const card = button && button.closest('.card, .detail');
    const buttons = card ? Array.from(card.querySelectorAll('.actions button')) : [button];
    await busy(buttons, async () => {
      await api('POST', '/v1/events', { user_id: state.user, type, item_id: itemId });
      showStatus(t('done_' + type), 'ok');
      document.querySelectorAll('.card[data-item-id="' + cssEsc(itemId) + '"]').forEach((c) => {
        if (type === 'dislike') c.classList.add('dismissed');
        if (type === 'click') c.classList.add('liked');
      });
      refreshPersonal();
    });
  }
  const cssEsc = (s) => (window.CSS && CSS.escape ? CSS.escape(String(s)) : String(s).replace(/["\\]/g, '\\$&'));

  // ---------------------------------------------------------------- product detail
  async function openDetail(id) {
    const seq = ++state.detailSeq;
    state.detailId = id;
    const panel = $('detail');
    panel.hidden = false;
    clear(panel).appendChild(el('p', { class: 'muted', text: t('loading') }));
    panel.scrollIntoView({ behavior: 'smooth', block: 'start' });
    updateAbout();
    let it = itemCache.get(id);
    try {
      if (!it || it.partial || it.description === undefined) { it = await api('GET', '/v1/items/' + encodeURIComponent(id)); itemCache.set(id, it); }
    } catch (e) { if (seq === state.detailSeq) { handleError(e); closeDetail(); } return; }
    if (seq !== state.detailSeq) return;
    renderDetail(it);
    updateAbout();
    api('POST', '/v1/events', { user_id: state.user, type: 'view', item_id: id }).then(refreshPersonal, handleError);
    loadRelated(id, seq);
  }

  function renderDetail(it) {
    const cat = topCat(it.category);
    const panel = clear($('detail'));
    panel.append(
      el('div', { class: 'panel-head' },
        el('h2', { id: 'detail-title', class: 'section-title', text: it.title || it.id }),
        el('button', { type: 'button', class: 'btn btn-ghost btn-small', text: t('close'), on: { click: closeDetail } })),
      el('div', { class: 'detail-top' },
        thumb(cat, it.title),
        el('div', { class: 'detail-info' },
          el('p', { class: 'meta' },
            it.brand ? el('span', { class: 'brand-name', text: it.brand }) : null,
            (it.category || []).map((c) => el('span', { class: 'cat', text: catLabel(c) })),
            typeof it.rating === 'number' ? el('span', { class: 'rating', title: t('rating'), text: '★ ' + it.rating.toFixed(1) }) : null),
          el('p', { class: 'price big', text: fmtPrice(it.price) }),
          el('p', { class: 'desc', text: it.description || '' }),
          it.tags && it.tags.length ? el('p', { class: 'tags' }, it.tags.map((g) => el('span', { class: 'tag', text: g }))) : null,
          actionButtons(it.id))),
      el('div', { class: 'detail-related' },
        el('div', null, el('h3', { class: 'subtitle', text: t('similar') }), el('ul', { id: 'detail-similar', class: 'link-list' })),
        el('div', null, el('h3', { class: 'subtitle', text: t('guidesRel') }), el('ul', { id: 'detail-guides', class: 'link-list' }))));
  }

  async function loadRelated(id, seq) {
    const base = '/v1/items/' + encodeURIComponent(id) + '/related?';
    const [prod, cont] = await Promise.allSettled([
      api('GET', base + 'kind=product&k=4'),
      api('GET', base + 'kind=content&k=3&language=' + state.lang),
    ]);
    if (seq !== state.detailSeq || !$('detail-similar')) return;
    fillList($('detail-similar'), prod, (h) => el('li', null,
      el('button', { type: 'button', class: 'link-btn open-detail', 'data-item-id': h.item_id, text: h.title || h.item_id }),
      el('span', { class: 'muted small', text: ' ' + fmtPrice(h.price) }),
      h.reason ? el('span', { class: 'reason', text: h.reason }) : null));
    fillList($('detail-guides'), cont, (h) => el('li', null,
      el('span', { class: 'kind-label', text: t('kind_' + h.kind) }),
      el('button', { type: 'button', class: 'link-btn open-guide', 'data-content-id': h.content_id, text: h.title || h.content_id })));
  }

  function fillList(ul, settled, render) {
    clear(ul);
    if (settled.status === 'rejected') { handleError(settled.reason); return; }
    const items = (settled.value && settled.value.items) || [];
    if (!items.length) ul.appendChild(el('li', { class: 'muted', text: t('nothing') }));
    items.forEach((h) => ul.appendChild(render(h)));
  }

  function closeDetail() {
    state.detailId = null; state.detailSeq++;
    clear($('detail')).hidden = true;
    updateAbout();
  }

  function updateAbout() {
    const it = state.detailId && itemCache.get(state.detailId);
    $('review-about-row').hidden = !state.detailId;
    $('review-about-title').textContent = it ? (it.title || it.id) : '';
  }

  // ---------------------------------------------------------------- rail + guides
  let refreshing = null;
  function refreshPersonal() {
    const seq = ++state.recSeq;
    const run = Promise.allSettled([loadRail(seq), loadGuides(seq)])
      .finally(() => { if (refreshing === run) refreshing = null; });
    refreshing = run;
    return run;
  }

  async function loadRail(seq) {
    try {
      const data = await api('GET', '/v1/users/' + encodeURIComponent(state.user) + '/recommendations?k=8');
      if (seq === state.recSeq) renderRail(data || {});
    } catch (e) { if (seq === state.recSeq) handleError(e); }
  }

  function renderRail(data) {
    const items = data.items || [];
    const list = clear($('rail-list'));
    items.forEach((r) => list.appendChild(el('li', { class: 'rec', 'data-item-id': r.item_id, 'data-source': r.source || '' },
      thumb(topCat(r.category), r.title),
      el('div', { class: 'rec-body' },
        el('button', { type: 'button', class: 'link-btn open-detail', 'data-item-id': r.item_id, text: r.title || r.item_id }),
        el('span', { class: 'price', text: fmtPrice(r.price) }),
        r.reason ? el('span', { class: 'reason', text: r.reason }) : null))));
    if (!items.length) list.appendChild(el('li', { class: 'muted', text: t('nothing') }));
    $('rail-note').hidden = !data.cold_start;
    $('rail-note').textContent = t('coldStart');
    const rail = $('rail');
    state.railVersion += 1;
    rail.setAttribute('data-version', String(state.railVersion));
    const sig = items.map((r) => r.item_id + '|' + (r.reason || '')).join(',');
    if (state.railSig && sig !== state.railSig) {
      rail.classList.remove('flash'); void rail.offsetWidth; rail.classList.add('flash');
    }
    state.railSig = sig;
  }

  async function loadGuides(seq) {
    try {
      const data = await api('GET', '/v1/users/' + encodeURIComponent(state.user) + '/content?k=4&language=' + state.lang);
      if (seq !== state.recSeq) return;
      const list = clear($('guides-list'));
      const items = (data && data.items) || [];
      items.forEach((g) => list.appendChild(el('li', { class: 'guide', 'data-content-id': g.content_id },
        el('span', { class: 'kind-label', text: t('kind_' + g.kind) }),
        el('button', { type: 'button', class: 'link-btn guide-title', text: g.title || g.content_id }),
        g.summary ? el('p', { class: 'summary', text: g.summary }) : null,
        g.reason ? el('span', { class: 'reason', text: g.reason }) : null)));
      if (!items.length) list.appendChild(el('li', { class: 'muted', text: t('nothing') }));
    } catch (e) { if (seq === state.recSeq) handleError(e); }
  }

  function renderMood() {
    const m = $('rail-mood');
    m.hidden = !state.lastMood;
    if (!state.lastMood) return;
    clear(m).append(t('latest'), badge(state.lastMood));
  }

  function badge(label) {
    const l = ['positive', 'neutral', 'negative'].includes(label) ? label : 'neutral';
    return el('span', { class: 'badge badge-' + l, 'data-label': l, text: t(l) });
  }

  // ---------------------------------------------------------------- guide modal
  let lastFocus = null;
  async function openGuide(id) {
    const modal = $('guide-modal');
    lastFocus = document.activeElement;
    $('guide-title').textContent = t('loading');
    clear($('guide-body')); clear($('guide-items')); $('guide-kind').textContent = '';
    modal.hidden = false;
    modal.querySelector('.modal-card').focus();
    try {
      const g = await api('GET', '/v1/content/' + encodeURIComponent(id));
      $('guide-kind').textContent = t('kind_' + g.kind);
      $('guide-title').textContent = g.title || g.id;
      String(g.body || '').split(/\n{2,}/).forEach((p) => { if (p.trim()) $('guide-body').appendChild(el('p', { text: p.trim() })); });
      const ids = g.item_ids || [];
      const got = await Promise.allSettled(ids.map((i) => (itemCache.has(i) && !itemCache.get(i).partial
        ? Promise.resolve(itemCache.get(i)) : api('GET', '/v1/items/' + encodeURIComponent(i)))));
      const ul = $('guide-items');
      got.forEach((r, i) => {
        const it = r.status === 'fulfilled' ? r.value : { id: ids[i], title: ids[i] };
        if (r.status === 'fulfilled') itemCache.set(it.id, it);
        ul.appendChild(el('li', null,
          el('button', { type: 'button', class: 'link-btn open-detail', 'data-item-id': it.id, text: it.title || it.id }),
          el('span', { class: 'muted small', text: ' ' + fmtPrice(it.price) })));
      });
      if (!ids.length) ul.appendChild(el('li', { class: 'muted', text: t('nothing') }));
    } catch (e) { handleError(e); closeGuide(); }
  }
  function closeGuide() {
    $('guide-modal').hidden = true;
    if (lastFocus && lastFocus.focus) lastFocus.focus();
  }

  // ---------------------------------------------------------------- write box
  const historyEntries = [];
  function renderHistoryLabels() {
    const ul = clear($('history'));
    historyEntries.slice().reverse().forEach((h) => ul.appendChild(el('li', { class: 'history-item' },
      el('div', { class: 'history-head' }, el('span', { class: 'kind-label', text: t('type_' + h.type) }), badge(h.sentiment)),
      el('p', { class: 'history-text', text: h.text }),
      h.itemTitle ? el('p', { class: 'muted small', text: t('about') + h.itemTitle }) : null,
      h.intent ? el('p', { class: 'muted small', text: t('intent') + ': ' + h.intent }) : null)));
  }

  async function submitReview(ev) {
    ev.preventDefault();
    const text = $('review-text').value.trim();
    if (!text) return;
    const type = $('review-type').value;
    const body = { user_id: state.user, type, text };
    const aboutId = state.detailId && $('review-about').checked ? state.detailId : null;
    if (aboutId) body.item_id = aboutId;
    await busy(ev.target.querySelector('button[type=submit]'), async () => {
      const ans = await api('POST', '/v1/events', body);
      const a = (ans && ans.analysis) || {};
      const label = (a.sentiment && a.sentiment.label) || 'neutral';
      const about = aboutId && itemCache.get(aboutId);
      historyEntries.push({ type, text, sentiment: label, intent: a.intent && a.intent.label,
        itemTitle: about ? about.title : '' });
      state.lastMood = label;
      $('review-text').value = '';
      renderHistoryLabels(); renderMood();
      refreshPersonal();
    });
  }

  // ---------------------------------------------------------------- chat
  function chatMsg(who, text, extra) {
    const log = $('chat-log');
    const msg = el('div', { class: 'msg msg-' + who },
      el('span', { class: 'visually-hidden', text: t(who === 'user' ? 'you' : 'bot') + ': ' }),
      el('p', { class: 'msg-text', text }), extra || null);
    log.appendChild(msg);
    log.scrollTop = log.scrollHeight;
    return msg;
  }

  async function submitChat(ev) {
    ev.preventDefault();
    const input = $('chat-input');
    const message = input.value.trim();
    if (!message) return;
    const body = { user_id: state.user, message, language: state.lang };
    const sid = safeGet(sessionStorage, SS_CHAT);
    if (sid) body.session_id = sid;
    chatMsg('user', message);
    input.value = '';
    await busy([ev.target.querySelector('button[type=submit]'), input], async () => {
      const ans = (await api('POST', '/v1/chat', body)) || {};
      if (ans.session_id) safeSet(sessionStorage, SS_CHAT, ans.session_id);
      const recs = ans.recommendations || [];
      const extra = el('div', null,
        recs.length ? el('div', { class: 'chat-recs' }, recs.map((r) => el('button', {
          type: 'button', class: 'chip chip-rec open-detail', 'data-item-id': r.item_id,
          text: (r.title || r.item_id) + (r.price !== undefined ? ' · ' + fmtPrice(r.price) : ''),
        }))) : null,
        ans.escalate ? el('p', { class: 'escalate', role: 'note', text: t('escalate') }) : null);
      chatMsg('bot', ans.reply || '…', extra);
      if (ans.sentiment && ans.sentiment.label) { state.lastMood = ans.sentiment.label; renderMood(); }
      refreshPersonal();
    });
    input.focus();
  }

  function resetChat() {
    safeSet(sessionStorage, SS_CHAT, null);
    clear($('chat-log'));
    chatMsg('bot', t('chatHello'));
  }

  // ---------------------------------------------------------------- wiring
  function wire() {
    document.querySelectorAll('.lang-btn').forEach((b) => b.addEventListener('click', () => {
      if (b.dataset.lang === state.lang) return;
      applyLang(b.dataset.lang);
      refreshPersonal();
      const open = state.detailId && itemCache.get(state.detailId);
      if (open && !open.partial && !$('detail').hidden) { renderDetail(open); loadRelated(open.id, state.detailSeq); }
      if ($('chat-log').children.length <= 1) resetChat();
    }));
    $('new-user').addEventListener('click', () => {
      setUser('web-' + randomHex(8));
      historyEntries.length = 0; state.lastMood = null; state.railSig = '';
      renderHistoryLabels(); renderMood(); closeDetail(); resetChat();
      document.querySelectorAll('.card.liked, .card.dismissed').forEach((c) => c.classList.remove('liked', 'dismissed'));
      showStatus(t('newUserDone'), 'ok');
      refreshPersonal();
    });
    $('key-form').addEventListener('submit', (ev) => {
      ev.preventDefault();
      const v = $('key-input').value.trim();
      $('key-input').value = '';
      if (!v) return;
      safeSet(sessionStorage, SS_KEY, v);
      $('key-form').hidden = true;
      updateKeyState();
      showStatus(t('keySaved'), 'ok');
      if (state.mode === 'browse') loadBrowse(false);
      refreshPersonal();
    });
    $('key-change').addEventListener('click', () => showKeyForm(t('keyHint')));
    $('search-form').addEventListener('submit', async (ev) => {
      ev.preventDefault();
      const q = $('search-input').value.trim();
      if (!q) { loadBrowse(false); return; }
      await busy(ev.target.querySelector('button[type=submit]'), () => runSearch(q));
    });
    $('search-clear').addEventListener('click', () => { $('search-input').value = ''; loadBrowse(false); });
    $('load-more').addEventListener('click', (ev) => busy(ev.target, () => loadBrowse(true)));
    $('review-form').addEventListener('submit', submitReview);
    $('chat-form').addEventListener('submit', submitChat);
    $('chat-toggle').addEventListener('click', () => {
      const open = $('chat-toggle').getAttribute('aria-expanded') !== 'true';
      $('chat-toggle').setAttribute('aria-expanded', String(open));
      $('chat-toggle').textContent = t(open ? 'chatHide' : 'chatShow');
      $('chat-body').hidden = !open;
    });
    $('guide-modal').addEventListener('click', (ev) => { if (ev.target.closest('[data-close]')) closeGuide(); });
    document.addEventListener('keydown', (ev) => { if (ev.key === 'Escape' && !$('guide-modal').hidden) closeGuide(); });

    // One delegated handler for actions, product links and guide links.
    document.addEventListener('click', (ev) => {
      const act = ev.target.closest('button[data-event]');
      if (act) { sendEvent(act.dataset.event, act.dataset.itemId, act); return; }
      const guide = ev.target.closest('.open-guide, .guide');
      if (guide) { openGuide(guide.dataset.contentId); return; }
      const open = ev.target.closest('.open-detail, .rec');
      if (open && open.dataset.itemId) {
        if (!$('guide-modal').hidden) closeGuide();
        openDetail(open.dataset.itemId);
      }
    });

    setInterval(() => { if (!document.hidden && !refreshing) refreshPersonal(); }, 15000);
  }

  async function init() {
    let uid = safeGet(localStorage, LS_USER);
    if (!uid) uid = 'web-' + randomHex(8);
    setUser(uid);
    const saved = safeGet(localStorage, LS_LANG);
    const nav = (navigator.language || '').toLowerCase();
    wire();
    applyLang(saved === 'zh' || saved === 'en' ? saved : (nav.startsWith('zh') ? 'zh' : 'en'));
    resetChat();
    try {
      const cfg = await api('GET', '/v1/storefront');
      if (cfg && typeof cfg === 'object') Object.assign(state.cfg, cfg);
    } catch (e) { handleError(e); }
    $('chat').hidden = state.cfg.chat === false;
    if (state.cfg.auth_required && !safeGet(sessionStorage, SS_KEY)) showKeyForm(t('keyHint'));
    updateKeyState();
    loadBrowse(false);
    refreshPersonal();
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', init);
  else init();
})();
