// The AeroGrid task pane: where the user enters the server and token (kept in
// OfficeRuntime.storage for the custom functions), picks a team, browses its grids (refreshed
// every 2 s, so the list follows apps as they start and stop) and inserts formulas.
//
// A classic script: it runs in the shared runtime after functions.js, whose client it uses
// through `globalThis.AeroGrid`.
(function () {
  'use strict';

  const REFRESH_MS = 2000;
  const TEAM_KEY = 'aerogrid.team';
  const MAX_ROW_SUGGESTIONS = 500;

  const AeroGrid = globalThis.AeroGrid;
  const keys = AeroGrid.storageKeys;
  const $ = (id) => document.getElementById(id);

  const state = {
    url: '',
    token: '',
    teams: [],
    team: '',
    grids: [],
    gridsShown: '',
    selected: null, // {team, app, grid}
    refreshTimer: null,
    generation: 0, // bumps on every (re)connect, so stale answers are ignored
    rowsController: null,
  };

  // Settings live in OfficeRuntime.storage, shared with the functions.
  const load = AeroGrid.getItem;
  const save = AeroGrid.setItem;

  function setStatus(text, isError) {
    const status = $('status');
    status.textContent = text;
    status.classList.toggle('error', Boolean(isError));
  }

  function trimUrl(url) {
    return String(url || '').trim().replace(/\/+$/, '');
  }

  /** A string literal in an Excel formula ("" escapes a quote). */
  function excelString(text) {
    return `"${String(text).replace(/"/g, '""')}"`;
  }

  function gridFormula(ref) {
    return `=AEROGRID.GRID(${excelString(`${ref.team}/${ref.app}`)},${excelString(ref.grid)})`;
  }

  function valueFormula(ref, row, column) {
    return `=AEROGRID.VALUE(${excelString(`${ref.team}/${ref.app}`)},${excelString(ref.grid)},${excelString(row)},${excelString(column)})`;
  }

  /** Puts a formula into the selected cell. */
  async function insert(formula) {
    try {
      await globalThis.Excel.run((context) => {
        const range = context.workbook.getSelectedRange();
        range.formulas = [[formula]];
        return context.sync();
      });
      setStatus(`Inserted ${formula}`);
    } catch (error) {
      setStatus(`Could not insert the formula: ${error && error.message}`, true);
    }
  }

  // -------------------------------------------------------------------------------------------
  // Connecting: settings, teams.

  async function fetchTeams(url, token) {
    let response;
    try {
      response = await globalThis.fetch(`${url}/api/v1/teams`, {
        headers: { authorization: `Bearer ${token}`, accept: 'application/json' },
        cache: 'no-store',
      });
    } catch {
      throw new Error(`Cannot reach ${url}. Check the address (Excel needs https:// except on localhost).`);
    }
    if (response.status === 401) throw new Error('The token is unknown or revoked.');
    if (!response.ok) throw new Error(`${url} answered ${response.status} to GET /api/v1/teams.`);
    let teams;
    try {
      teams = await response.json();
    } catch {
      throw new Error(`${url} does not look like an AeroGrid server.`);
    }
    if (!Array.isArray(teams)) throw new Error(`${url} does not look like an AeroGrid server.`);
    return teams.map((team) => String(team.name)).filter(Boolean).sort();
  }

  async function connect() {
    const generation = ++state.generation;
    stopRefresh();
    const url = trimUrl($('url').value);
    const token = $('token').value.trim();
    if (!url) {
      setStatus('Enter the server address.', true);
      return;
    }
    if (!token) {
      setStatus('Enter a token (create a read-only token on the app page, "Use in Excel").', true);
      return;
    }
    state.url = url;
    state.token = token;
    await save(keys.url, url);
    await save(keys.token, token);
    // Cells that were waiting for a token, or an app named without its team, go again now.
    AeroGrid.settingsChanged();
    setStatus(`Connecting to ${url}…`);
    $('connect').disabled = true;
    let teams;
    try {
      teams = await fetchTeams(url, token);
    } catch (error) {
      if (generation !== state.generation) return;
      $('browse').hidden = true;
      setStatus(error.message, true);
      return;
    } finally {
      $('connect').disabled = false;
    }
    if (generation !== state.generation) return;
    state.teams = teams;
    if (teams.length === 0) {
      $('browse').hidden = true;
      setStatus('Connected, but this token belongs to no team.', true);
      return;
    }
    const remembered = await load(TEAM_KEY);
    const team = teams.includes(remembered) ? remembered : teams[0];
    const select = $('team');
    select.replaceChildren(
      ...teams.map((name) => {
        const option = document.createElement('option');
        option.value = name;
        option.textContent = name;
        return option;
      }),
    );
    select.value = team;
    select.disabled = teams.length === 1;
    $('browse').hidden = false;
    setStatus(
      teams.length === 1
        ? `Connected to ${url}, team ${team}. Formulas may name apps without the team.`
        : `Connected to ${url}. This token sees ${teams.length} teams: formulas name apps as "team/app".`,
    );
    await chooseTeam(team);
  }

  async function chooseTeam(team) {
    state.team = team;
    state.selected = null;
    state.gridsShown = '';
    $('details').hidden = true;
    await save(TEAM_KEY, team);
    stopRefresh();
    await refresh(state.generation);
  }

  // -------------------------------------------------------------------------------------------
  // The grid list, refreshed every 2 s.

  function stopRefresh() {
    clearTimeout(state.refreshTimer);
    state.refreshTimer = null;
  }

  async function refresh(generation) {
    const team = state.team;
    try {
      const grids = await AeroGrid.listGrids({ url: state.url, token: state.token, team });
      if (generation !== state.generation || team !== state.team) return;
      state.grids = grids;
      renderGrids();
      $('refreshed').textContent = `(updated ${new Date().toLocaleTimeString()})`;
    } catch (error) {
      if (generation !== state.generation || team !== state.team) return;
      setStatus(`Cannot list the grids: ${error.grpcMessage || error.message}`, true);
    }
    if (generation !== state.generation || team !== state.team) return;
    state.refreshTimer = setTimeout(() => refresh(generation), REFRESH_MS);
  }

  function sameRef(a, b) {
    return Boolean(a && b) && a.team === b.team && a.app === b.app && a.grid === b.grid;
  }

  function renderGrids() {
    const shown = JSON.stringify(state.grids);
    if (shown === state.gridsShown) return;
    state.gridsShown = shown;
    const list = $('grids');
    list.replaceChildren(
      ...state.grids.map((info) => {
        const item = document.createElement('li');
        item.setAttribute('role', 'button');
        item.setAttribute('tabindex', '0');
        item.className = sameRef(info.grid, state.selected) ? 'selected' : '';
        const name = document.createElement('span');
        name.textContent = `${info.grid.app} / ${info.grid.grid}`;
        const badge = document.createElement('span');
        badge.className = info.live ? 'badge live' : 'badge';
        badge.textContent = info.live ? 'live' : 'not live';
        item.appendChild(name);
        item.appendChild(badge);
        item.addEventListener('click', () => select(info.grid));
        item.addEventListener('keydown', (event) => {
          if (event.key === 'Enter' || event.key === ' ') select(info.grid);
        });
        return item;
      }),
    );
    $('no-grids').hidden = state.grids.length > 0;
    if (state.selected) {
      const info = state.grids.find((g) => sameRef(g.grid, state.selected));
      if (info) renderDetails(info);
      else $('details').hidden = true;
    }
  }

  function select(ref) {
    const changed = !sameRef(ref, state.selected);
    state.selected = { team: ref.team, app: ref.app, grid: ref.grid };
    state.gridsShown = '';
    renderGrids();
    if (changed) {
      $('row').value = '';
      suggestRows(state.selected);
    }
  }

  function renderDetails(info) {
    const ref = info.grid;
    $('details').hidden = false;
    $('selected-name').textContent = `${ref.team}/${ref.app} / ${ref.grid}`;
    $('selected-state').textContent = `${info.live ? 'Live' : 'Not live (the app is not running)'}; columns: ${info.columns.join(', ') || 'none yet'}`;
    const column = $('column');
    const previous = column.value;
    column.replaceChildren(
      ...info.columns.map((name) => {
        const option = document.createElement('option');
        option.value = name;
        option.textContent = name;
        return option;
      }),
    );
    column.value = info.columns.includes(previous) ? previous : info.columns[0] || '';
    updateFormula();
  }

  function updateFormula() {
    const ref = state.selected;
    if (!ref) return;
    const row = $('row').value.trim();
    $('formula').textContent = row ? valueFormula(ref, row, $('column').value) : gridFormula(ref);
    $('insert-value').disabled = !row || !$('column').value;
  }

  /** Offers the grid's row keys for the row field (from one snapshot). */
  async function suggestRows(ref) {
    if (state.rowsController) state.rowsController.abort();
    const controller = new AbortController();
    state.rowsController = controller;
    const datalist = $('row-keys');
    datalist.replaceChildren();
    try {
      for await (const message of AeroGrid.subscribe({
        url: state.url,
        token: state.token,
        grid: ref,
        maxUpdatesPerSecond: 1,
        signal: controller.signal,
      })) {
        if (!message.snapshot) continue;
        const keys = message.snapshot.rows.map((row) => row.key).sort();
        datalist.replaceChildren(
          ...keys.slice(0, MAX_ROW_SUGGESTIONS).map((key) => {
            const option = document.createElement('option');
            option.value = key;
            return option;
          }),
        );
        break;
      }
    } catch {
      // Not live, or gone: no suggestions.
    } finally {
      controller.abort();
      if (state.rowsController === controller) state.rowsController = null;
    }
  }

  // -------------------------------------------------------------------------------------------

  async function start() {
    const url = await load(keys.url);
    const token = await load(keys.token);
    $('url').value = url || AeroGrid.defaultUrl();
    $('token').value = token || '';
    $('connect-form').addEventListener('submit', (event) => {
      event.preventDefault();
      connect();
    });
    $('team').addEventListener('change', () => chooseTeam($('team').value));
    $('row').addEventListener('input', updateFormula);
    $('column').addEventListener('change', updateFormula);
    $('insert-grid').addEventListener('click', () => {
      if (state.selected) insert(gridFormula(state.selected));
    });
    $('insert-value').addEventListener('click', () => {
      const row = $('row').value.trim();
      if (state.selected && row) insert(valueFormula(state.selected, row, $('column').value));
    });
    if (url && token) await connect();
    else setStatus('Enter the server and a token, then Connect.');
  }

  const ready = globalThis.Office && globalThis.Office.onReady;
  if (ready) globalThis.Office.onReady(() => start());
  else if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start);
  else start();
})();
