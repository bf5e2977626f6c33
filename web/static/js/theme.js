// Dark and light themes. The account's preferences.theme decides; the toggle overrides it for
// this browser (kept in localStorage) because the server has no route to change preferences.

const KEY = 'maula.theme';

/** Applies the stored override, else the preference, else dark. */
export function applyTheme(preference) {
  const theme = localStorage.getItem(KEY) || preference || 'dark';
  document.documentElement.dataset.theme = theme === 'light' ? 'light' : 'dark';
}

/** Wires a toggle button. */
export function themeToggle(button) {
  const label = () => `Switch to ${document.documentElement.dataset.theme === 'dark' ? 'light' : 'dark'} theme`;
  button.setAttribute('aria-label', label());
  button.addEventListener('click', () => {
    const next = document.documentElement.dataset.theme === 'dark' ? 'light' : 'dark';
    localStorage.setItem(KEY, next);
    document.documentElement.dataset.theme = next;
    button.setAttribute('aria-label', label());
  });
}
