// What a cell shows instead of a value (Excel errors with a message), and what a failed call
// means for the cells that wait on it; and which team a team's token belongs to (a cell may name
// its app without the team).

import { Code, GrpcError } from './grpcweb.js';

/** Something a cell shows instead of a value; `kind` is a `CustomFunctions.ErrorCode` name. */
export class Problem extends Error {
  constructor(kind, message) {
    super(message);
    this.name = 'Problem';
    this.kind = kind;
  }
}

const MESSAGE_LIMIT = 255;

/** Only #VALUE! and #N/A carry a message in Excel; other codes show bare. */
const CODES_WITH_MESSAGE = new Set(['invalidValue', 'notAvailable']);

export function toExcelError(problem) {
  const CF = globalThis.CustomFunctions;
  if (!CODES_WITH_MESSAGE.has(problem.kind)) return new CF.Error(CF.ErrorCode[problem.kind]);
  const message =
    problem.message.length > MESSAGE_LIMIT
      ? `${problem.message.slice(0, MESSAGE_LIMIT - 1)}…`
      : problem.message;
  return new CF.Error(CF.ErrorCode[problem.kind], message);
}

export function noToken() {
  return new Problem(
    'invalidValue',
    'AeroGrid: no token is set: open the AeroGrid task pane and enter the server and a token',
  );
}

export function noUrl() {
  return new Problem(
    'notAvailable',
    'AeroGrid: no server URL is set: open the AeroGrid task pane and enter the server',
  );
}

/** What a failed subscription means for the cells of `ref` (`team/app/grid`). */
export function problemFromError(error, ref) {
  if (error instanceof Problem) return error;
  if (error instanceof GrpcError || (error && typeof error.code === 'number')) {
    const said = error.grpcMessage ? `: ${error.grpcMessage}` : '';
    switch (error.code) {
      case Code.UNAUTHENTICATED:
        return new Problem(
          'invalidValue',
          'AeroGrid: the token is unknown or revoked: enter a valid token in the AeroGrid task pane',
        );
      case Code.PERMISSION_DENIED:
        return new Problem('invalidValue', `AeroGrid: this token may not read ${ref}${said}`);
      case Code.NOT_FOUND:
        return new Problem(
          'notAvailable',
          error.grpcMessage ? `AeroGrid: ${error.grpcMessage}` : `AeroGrid: ${ref} was not found`,
        );
      case Code.INVALID_ARGUMENT:
        return new Problem('invalidValue', `AeroGrid: ${ref}${said}`);
      case Code.UNAVAILABLE:
        if (error.network) {
          return new Problem('notAvailable', `AeroGrid: ${error.grpcMessage} (reconnecting)`);
        }
        return new Problem('notAvailable', `AeroGrid: ${ref} is not live${said} (reconnecting)`);
      case Code.UNIMPLEMENTED:
        return new Problem(
          'notAvailable',
          `AeroGrid: the server does not offer the grid API${said}: check the server URL in the AeroGrid task pane`,
        );
      default:
        return new Problem(
          'notAvailable',
          `AeroGrid: ${ref}: error ${error.code}${said} (reconnecting)`,
        );
    }
  }
  return new Problem('notAvailable', `AeroGrid: ${ref}: ${error && error.message} (reconnecting)`);
}

// ---------------------------------------------------------------------------------------------
// The team of a token, for `app` names without one.

export const teamLookups = new Map();
const FAILED_LOOKUP_MS = 2_000;

/**
 * The one team the token sees (GET /api/v1/teams), looked up once per server and token.
 * Rejects with a Problem.
 */
export function tokenTeam(settings) {
  const key = `${settings.url}\n${settings.token}`;
  let lookup = teamLookups.get(key);
  if (!lookup) {
    lookup = fetchTokenTeam(settings);
    teamLookups.set(key, lookup);
    // Answers are kept; a failure is kept a few seconds (the cells waiting on it retry on
    // their own timers, and should not each ask the server again).
    lookup.catch(() => {
      setTimeout(() => {
        if (teamLookups.get(key) === lookup) teamLookups.delete(key);
      }, FAILED_LOOKUP_MS);
    });
  }
  return lookup;
}

async function fetchTokenTeam({ url, token }) {
  if (!url) throw noUrl();
  if (!token) throw noToken();
  let response;
  try {
    response = await globalThis.fetch(`${url}/api/v1/teams`, {
      headers: { authorization: `Bearer ${token}`, accept: 'application/json' },
      cache: 'no-store',
    });
  } catch {
    throw new Problem('notAvailable', `AeroGrid: cannot reach ${url} (retrying)`);
  }
  if (response.status === 401) {
    throw problemFromError(new GrpcError(Code.UNAUTHENTICATED, ''), '');
  }
  if (!response.ok) {
    throw new Problem(
      'notAvailable',
      `AeroGrid: ${url} answered ${response.status} to GET /api/v1/teams (retrying)`,
    );
  }
  let teams;
  try {
    teams = await response.json();
  } catch {
    throw new Problem('notAvailable', `AeroGrid: ${url} is not an AeroGrid server (retrying)`);
  }
  const names = Array.isArray(teams) ? teams.map((team) => team && team.name).filter(Boolean) : [];
  if (names.length === 1) return names[0];
  if (names.length === 0) {
    throw new Problem('invalidValue', 'AeroGrid: this token belongs to no team');
  }
  throw new Problem(
    'invalidValue',
    `AeroGrid: this token sees several teams (${names.slice(0, 5).join(', ')}${names.length > 5 ? ', …' : ''}): write the app as "team/app"`,
  );
}
