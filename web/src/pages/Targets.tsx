export function TargetsPage() {
  return (
    <section className="page">
      <h1>Targets</h1>
    </section>
  );
}
