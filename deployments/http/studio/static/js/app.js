// The studio page: wires the API key, the tool tabs and forms, the job panel and the job list.

import { apiKey, forgetApiKey, rememberedKey, setApiKey } from './api.js';
import { toolForms } from './forms.js';
import { JobList } from './joblist.js';
import { describe, jobPanel } from './jobview.js';
import { loadVoices, wireRegistration } from './voice.js';

const $ = (selector) => document.querySelector(selector);

/** WAI-ARIA tabs: one tab stop for the list, arrow keys / Home / End move between the tools. */
function wireTabs(tablist) {
  const tabs = [...tablist.querySelectorAll('[role="tab"]')];
  const select = (tab, focus) => {
    for (const other of tabs) {
      const selected = other === tab;
      other.setAttribute('aria-selected', String(selected));
      other.tabIndex = selected ? 0 : -1;
      document.getElementById(other.getAttribute('aria-controls')).hidden = !selected;
    }
    if (focus) tab.focus();
  };
  tablist.addEventListener('click', (event) => {
    const tab = event.target.closest('[role="tab"]');
    if (tab) select(tab, false);
  });
  tablist.addEventListener('keydown', (event) => {
    const at = tabs.indexOf(document.activeElement);
    const moves = { ArrowRight: at + 1, ArrowLeft: at - 1, Home: 0, End: tabs.length - 1 };
    if (at < 0 || !(event.key in moves)) return;
    event.preventDefault();
    select(tabs[(moves[event.key] + tabs.length) % tabs.length], true);
  });
  select(tabs[0], false);
  return (id) => select(document.getElementById(id), true);
}

function wireKey(onChange) {
  const input = $('#api-key');
  const remember = $('#remember-key');
  const status = $('#key-status');
  const say = () => {
    status.textContent = apiKey() ? `key set${rememberedKey() ? ', remembered on this device' : ' for this tab'}` : 'no key';
  };
  input.value = apiKey();
  remember.checked = rememberedKey();
  say();
  $('#key-form').addEventListener('submit', (event) => {
    event.preventDefault();
    setApiKey(input.value.trim(), remember.checked);
    say();
    onChange();
  });
  $('#forget-key').addEventListener('click', () => {
    forgetApiKey();
    input.value = '';
    say();
    onChange();
  });
}

function start() {
  const selectTab = wireTabs($('#tools'));
  let list = null;
  const panel = jobPanel($('#job-view'), () => list.refresh());
  const open = (jobId) => {
    list.select(jobId);
    panel.open(jobId);
  };
  const forms = toolForms($('#create'), (job) => {
    panel.show(job);
    list.select(job.id);
    list.refresh();
  });
  list = new JobList({
    rows: $('#job-rows'), error: $('#jobs-error'), older: $('#older-jobs'), onOpen: open,
    onJobs: (jobs) => forms.loop.setJobs(jobs),
  });
  const voiceSelect = $('#voice-choice');
  const voicesError = forms['voice-replace'].error;
  const reloadVoices = () => loadVoices(voiceSelect).catch((error) => { voicesError.textContent = describe(error); });
  wireRegistration({
    file: $('#register-file'), name: $('#register-name'), transcript: $('#register-transcript'),
    button: $('#register-voice'), status: $('#register-status'), select: voiceSelect,
  });
  $('#refresh-jobs').addEventListener('click', () => list.refresh());
  wireKey(() => {
    voicesError.textContent = '';
    list.refresh();
    reloadVoices();
  });
  document.addEventListener('studio:loop-job', (event) => {
    forms.loop.useJob(event.detail);
    selectTab('tab-loop');
  });
  list.refresh();
  reloadVoices();
}

start();
