// Where the console keeps its secrets: the tab's sessionStorage (gone when
// the tab closes), or memory when that is unavailable. Never localStorage,
// never a cookie, never the URL.

const TENANT_KEY = 'bulkhead.console.key';
const ADMIN_TOKEN = 'bulkhead.console.admin';
const memory = new Map();

function get(name) {
  try {
    return window.sessionStorage.getItem(name) ?? memory.get(name) ?? null;
  } catch {
    return memory.get(name) ?? null;
  }
}

function set(name, value) {
  try {
    if (value) window.sessionStorage.setItem(name, value);
    else window.sessionStorage.removeItem(name);
  } catch {
    // storage refused: memory only, the session ends with the page
  }
  if (value) memory.set(name, value);
  else memory.delete(name);
}

export const session = {
  get key() {
    return get(TENANT_KEY);
  },
  set key(v) {
    set(TENANT_KEY, v);
  },
  get admin() {
    return get(ADMIN_TOKEN);
  },
  set admin(v) {
    set(ADMIN_TOKEN, v);
  },
};
