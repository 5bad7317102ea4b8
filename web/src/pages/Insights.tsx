export function InsightsPage() {
  return (
    <section className="page">
      <h1>Insights</h1>
    </section>
  );
}
