export function ReleasePage() {
  return (
    <section className="page">
      <h1>Release</h1>
    </section>
  );
}
