export function VariablesPage() {
  return (
    <section className="page">
      <h1>Variables</h1>
    </section>
  );
}
