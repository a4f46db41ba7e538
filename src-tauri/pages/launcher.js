// The desktop app's launcher page: shown instead of the gateway's UI when another Gatehouse
// already runs on this computer, or when ours could not start.
const { invoke } = window.__TAURI__.core;

const state = await invoke('launcher_state');
const quit = () => invoke('quit_app');
if (state.mode === 'existing') {
  const link = document.getElementById('existing-url');
  link.textContent = state.url;
  link.href = state.url;
  document.getElementById('connect').addEventListener('click', () => { window.location.href = state.url; });
  document.getElementById('quit').addEventListener('click', quit);
  document.getElementById('existing').hidden = false;
} else if (state.mode === 'error') {
  document.getElementById('error-message').textContent = state.message;
  document.getElementById('error-data-dir').textContent = state.dataDir;
  document.getElementById('quit-error').addEventListener('click', quit);
  document.getElementById('error').hidden = false;
}
