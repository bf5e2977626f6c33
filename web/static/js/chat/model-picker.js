// Provider and model pickers: only the providers the server can reach, with the user's
// preferences.defaultLLM preselected and each provider's default model.

import { h } from '../dom.js';

/** Wires the two selects. Returns { current() } → { provider, model }. */
export function modelPicker({ providerSelect, modelSelect, providers, preferred }) {
  const available = providers.filter((p) => p.available);
  providerSelect.replaceChildren(...available.map((p) => h('option', { value: p.name }, p.name)));
  const initial = available.find((p) => p.name === preferred) || available[0];
  if (initial) providerSelect.value = initial.name;

  const fillModels = () => {
    const p = available.find((x) => x.name === providerSelect.value);
    const models = p ? p.models.map((m) => m.id) : [];
    if (p && p.defaultModel && !models.includes(p.defaultModel)) models.unshift(p.defaultModel);
    modelSelect.replaceChildren(...models.map((id) => h('option', { value: id }, id)));
    if (p && p.defaultModel) modelSelect.value = p.defaultModel;
  };
  fillModels();
  providerSelect.addEventListener('change', fillModels);

  return {
    current: () => ({ provider: providerSelect.value, model: modelSelect.value || undefined }),
    available: () => available.length > 0,
  };
}
