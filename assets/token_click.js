// Clicking a generated token picks its step: the tab shows that step's alternatives and candidates.
// Tokens are spans with data-step (playground/figures/tokens.py); the step goes to Python as a select event.
element.addEventListener('click', (event) => {
  const token = event.target.closest('[data-step]');
  const step = token ? Number(token.dataset.step) : -1;
  if (step < 0) return;
  element.querySelectorAll('.dp-selected').forEach((t) => t.classList.remove('dp-selected'));
  token.classList.add('dp-selected');
  trigger('select', { index: step, value: token.textContent, selected: true });
});
