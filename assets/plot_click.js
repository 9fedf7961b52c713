// Clicking a point of a plotly figure in this tab (a run of the branch tree, a node of the beam tree) tells
// Python which one: a select event whose index is the point's customdata and whose value is its trace's meta.
// Gradio re-renders plots as they stream, so the listener is (re)attached to every plot of the tab each second.
const panel = element.closest('[role="tabpanel"]') || document;
const hook = () => {
  panel.querySelectorAll('.js-plotly-plot').forEach((plot) => {
    if (plot.dpClickHooked || typeof plot.on !== 'function') return;
    plot.dpClickHooked = true;
    plot.on('plotly_click', (data) => {
      const point = data && data.points && data.points[0];
      if (!point || point.customdata === undefined || point.data.meta === undefined) return;
      trigger('select', { index: point.customdata, value: point.data.meta, selected: true });
    });
  });
};
hook();
setInterval(hook, 1000);
